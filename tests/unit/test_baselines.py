"""Tests for dynaseg.baselines: the k-means and Felzenszwalb rows of Table 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from dynaseg.baselines import FelzenszwalbSegmenter, KMeansSegmenter
from dynaseg.config import compose_config
from dynaseg.data.base import make_sample
from dynaseg.engine import HISTORY_KEYS, SegmentationResult
from dynaseg.metrics import best_iou_per_segment
from dynaseg.outputs import RUN
from dynaseg.pipeline import Pipeline
from tests.synthetic import region_image

# A small silhouette search keeps the estimate fast (its cost is O(n_samples²) per k).
FAST = {"k_min": 2, "k_max": 6, "n_samples": 400}


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def check_contract(result: SegmentationResult, shape: tuple[int, int], reason: str) -> None:
    assert isinstance(result, SegmentationResult)
    assert result.labels.shape == shape and result.labels.dtype == np.int32
    assert result.labels.min() == 0
    assert np.unique(result.labels).size == result.n_clusters  # 0…K−1, no gaps
    sizes = np.bincount(result.labels.ravel())
    assert (np.diff(sizes) <= 0).all(), "largest segment first"
    assert result.iterations == 0 and result.stop_reason == reason
    assert result.history == {key: [] for key in HISTORY_KEYS}


@pytest.mark.parametrize("k", [3, None])
def test_kmeans_finds_three_colour_regions(three_regions, k):
    image, truth = three_regions
    segmenter = KMeansSegmenter(k=k, **FAST)
    result = segmenter.fit(image, seed=3)
    check_contract(result, truth.shape, "kmeans")
    assert result.n_clusters == 3 and result.threshold == 3
    assert result.opt_nc == (None if k is not None else 3)
    assert best_iou_per_segment(result.labels, truth).min() >= 0.9


def test_kmeans_fixed_k_is_kept_and_clipped_to_the_colours(three_regions):
    image, _ = three_regions
    assert KMeansSegmenter(k=5).fit(image).n_clusters == 5
    flat = np.zeros((8, 10, 3), np.uint8)
    flat[:, 5:] = 255
    result = KMeansSegmenter(k=4).fit(flat)
    assert result.n_clusters == 2 and result.threshold == 4


def test_kmeans_is_deterministic_per_seed_and_takes_tensors(three_regions):
    image, _ = three_regions
    regions = np.random.default_rng(0).integers(0, 5, (24, 32))
    colours = [(0, 0, 0), (60, 60, 60), (120, 0, 0), (0, 120, 0), (0, 0, 120)]
    noisy = region_image(regions, colours, noise=40.0)
    segmenter = KMeansSegmenter(k=4, n_samples=100)
    first = segmenter.fit(noisy, seed=7)
    np.testing.assert_array_equal(first.labels, segmenter.fit(noisy, seed=7).labels)
    np.testing.assert_array_equal(first.labels, segmenter.fit(as_tensor(noisy), seed=7).labels)
    estimated = KMeansSegmenter(**FAST)
    np.testing.assert_array_equal(
        estimated.fit(image, seed=1).labels, estimated.fit(image, seed=1).labels
    )


def test_felzenszwalb_splits_a_two_colour_image():
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, 20:] = (250, 250, 250)
    segmenter = FelzenszwalbSegmenter(scale=50, min_size=10)
    result = segmenter.fit(image, seed=0)
    check_contract(result, (30, 40), "felzenszwalb")
    assert result.n_clusters > 1 and result.opt_nc is None
    np.testing.assert_array_equal(result.labels, segmenter.fit(image, seed=0).labels)
    np.testing.assert_array_equal(result.labels, segmenter.fit(as_tensor(image), seed=5).labels)


@pytest.mark.parametrize("segmenter", [KMeansSegmenter(k=3), FelzenszwalbSegmenter()])
def test_a_baseline_goes_the_same_way_through_the_pipeline(segmenter, three_regions, tmp_path):
    image, _ = three_regions
    sample = make_sample("img", image, [], image.shape[:2], tmp_path / "img.png")
    pipeline = Pipeline(segmenter, tmp_path, RUN, {"seed": 0}, batch_size=2)
    pipeline.submit(sample)
    pipeline.flush()
    (record,) = pipeline.records
    saved = np.asarray(Image.open(RUN.path(tmp_path, "labels", "img")))
    assert saved.shape == image.shape[:2] and record["iterations"] == 0
    assert record["n_clusters"] == len(np.unique(saved)) and not pipeline.failures


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KMeansSegmenter(k=0), "k must be >= 1"),
        (lambda: KMeansSegmenter(k_min=5, k_max=4), "k_min"),
        (lambda: KMeansSegmenter(k=10, n_samples=10), "n_samples"),
        (lambda: FelzenszwalbSegmenter(scale=0), "scale must be > 0"),
        (lambda: FelzenszwalbSegmenter(min_size=-1), "min_size"),
    ],
)
def test_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("method", "cls"), [("kmeans", KMeansSegmenter), ("felzenszwalb", FelzenszwalbSegmenter)]
)
def test_method_configs_replace_the_segmenter(method, cls, tmp_path):
    config = compose_config(
        "run", ["+experiment=bsd_fsf_cnn", f"method={method}", f"dataset.root={tmp_path}"]
    )
    assert isinstance(instantiate(config.segmenter), cls)
    assert "backbone" not in config.segmenter and "weighting" not in config.segmenter
