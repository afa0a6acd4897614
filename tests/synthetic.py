"""Synthetic images whose true regions are known."""

from __future__ import annotations

import numpy as np


def region_image(
    regions: np.ndarray, colours: list[tuple[int, int, int]], noise: float, seed: int = 0
) -> np.ndarray:
    """An RGB uint8 image painting each region id with its colour plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    image = np.array(colours, dtype=np.float64)[regions]
    image += rng.normal(0.0, noise, image.shape)
    return image.clip(0, 255).round().astype(np.uint8)
