"""Synthetic images whose true regions are known, and the process helper of the kill tests."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def region_image(
    regions: np.ndarray, colours: list[tuple[int, int, int]], noise: float, seed: int = 0
) -> np.ndarray:
    """An RGB uint8 image painting each region id with its colour plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    image = np.array(colours, dtype=np.float64)[regions]
    image += rng.normal(0.0, noise, image.shape)
    return image.clip(0, 255).round().astype(np.uint8)


def write_two_images(folder: Path, second: str = "tall.jpg") -> None:
    """``good.png`` (30×41, two halves) and a 41×30 second image named ``second`` in a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    regions = np.zeros((30, 41), dtype=np.int64)
    regions[:, 20:] = 1
    Image.fromarray(region_image(regions, [(220, 30, 30), (30, 30, 220)], 8.0)).save(
        folder / "good.png"
    )
    Image.fromarray(region_image(regions.T, [(20, 200, 20), (240, 240, 240)], 8.0)).save(
        folder / second
    )


def kill_when(process: subprocess.Popen, done: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL a running process as soon as ``done()`` holds (it must still be running then)."""
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert process.poll() is None, "the process ended before the condition held"
            assert time.monotonic() < deadline, f"the condition did not hold in {timeout} s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
