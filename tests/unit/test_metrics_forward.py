"""torchmetrics' ``forward`` on every metric: one image's own scores, and the running state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics import Metric

from dynaseg.metrics import DatasetHungarianIoU, ImageHungarianIoU, RegionMeasures, SegmentBestIoU


def two_images() -> list[dict[str, np.ndarray]]:
    """Two images of different sizes and contents, with several annotations each."""
    rng = np.random.default_rng(7)
    images = []
    for shape, n_pred in (((9, 11), 4), ((11, 9), 6)):
        target = rng.choice([0, 1, 2, 3, 255], size=shape)
        target[:, 0] = 3  # a stuff-only column keeps both groups defined
        images.append(
            {
                "pred": rng.integers(0, n_pred, size=shape),
                "target": target,
                "gts": np.stack([rng.integers(0, n, size=shape) for n in (2, 3, 5)]),
            }
        )
    return images


Args = Callable[[dict[str, np.ndarray]], tuple[Any, ...]]


def annotations(image: dict[str, np.ndarray]) -> tuple[Any, ...]:
    return image["pred"], image["gts"]


def void(image: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """One annotation with VOC-style void pixels."""
    return image["pred"], np.where(image["target"] == 255, 255, image["gts"][0])


def classes(image: dict[str, np.ndarray]) -> tuple[Any, ...]:
    return image["pred"], image["target"]


def batch(image: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """A batch of one image (B x H x W), as ``ImageHungarianIoU`` also takes."""
    return image["pred"][None], image["target"][None]


CASES: dict[str, tuple[Callable[[], Metric], Args]] = {
    "segment_cc": (lambda: SegmentBestIoU(connectivity=4), annotations),
    "segment_raw": (lambda: SegmentBestIoU(connectivity=None), annotations),
    "segment_voc": (lambda: SegmentBestIoU(connectivity=4, ignore_index=255), void),
    "region": (lambda: RegionMeasures(), annotations),
    "region_cc": (lambda: RegionMeasures(connectivity=8, ignore_index=255), void),
    "dataset": (lambda: DatasetHungarianIoU(4, 6, n_things=2), classes),
    "image": (lambda: ImageHungarianIoU(4, n_things=2), classes),
    "image_batch": (lambda: ImageHungarianIoU(4, n_things=2), batch),
}


def scores_of(make: Callable[[], Metric], args: Args, images: list[dict]) -> dict[str, Any]:
    """A fresh metric's ``update`` on each image, then ``compute``."""
    metric = make()
    for image in images:
        metric.update(*args(image))
    return metric.compute()


def assert_identical(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same keys, dtypes and values, bit for bit (NaN equal to NaN)."""
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(), err_msg=key)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_scores_each_image_and_accumulates(name):
    make, args = CASES[name]
    images = two_images()
    metric = make()
    assert not metric.full_state_update  # forward takes the exact one-update path
    for image in images:
        assert_identical(metric(*args(image)), scores_of(make, args, [image]))
    assert metric.update_count == 2
    assert_identical(metric.compute(), scores_of(make, args, images))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_on_a_clone_leaves_the_original_alone(name):
    make, args = CASES[name]
    first, second = two_images()
    metric = make()
    metric(*args(first))
    copy = metric.clone()
    assert_identical(copy(*args(second)), scores_of(make, args, [second]))
    assert_identical(metric.compute(), scores_of(make, args, [first]))
    assert_identical(copy.compute(), scores_of(make, args, [first, second]))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_keeps_int64_states_after_dtype_casts(name):
    make, args = CASES[name]
    images = two_images()
    metric = make()
    metric.to(torch.float16)
    metric.set_dtype(torch.bfloat16)
    for image in images:
        metric(*args(image))
    assert all(v.dtype == torch.int64 for v in metric.metric_state.values())
    assert_identical(metric.compute(), scores_of(make, args, images))
