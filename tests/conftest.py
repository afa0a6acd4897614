"""Shared fixtures: small synthetic images whose true regions are known."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import region_image


@pytest.fixture
def three_regions() -> tuple[np.ndarray, np.ndarray]:
    """A 96×128 image of three flat, noisy regions (left, top right, bottom right) and its truth."""
    regions = np.zeros((96, 128), dtype=np.int64)
    regions[:, 53:] = 1
    regions[52:, 53:] = 2
    return region_image(regions, [(200, 40, 40), (40, 170, 60), (50, 60, 210)], 12.0), regions
