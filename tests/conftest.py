"""Shared fixtures: small synthetic images whose true regions are known."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.synthetic import region_image


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per core) each worker keeps to one core:
    one torch thread, and one OpenMP thread for the processes its tests start, so that workers do
    not oversubscribe the machine."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture
def three_regions() -> tuple[np.ndarray, np.ndarray]:
    """A 96×128 image of three flat, noisy regions (left, top right, bottom right) and its truth."""
    regions = np.zeros((96, 128), dtype=np.int64)
    regions[:, 53:] = 1
    regions[52:, 53:] = 2
    return region_image(regions, [(200, 40, 40), (40, 170, 60), (50, 60, 210)], 12.0), regions
