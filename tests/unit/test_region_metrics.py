"""BSDS500 region measures (covering, PRI, VoI) against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import mutual_info_score, rand_score

from dynaseg.metrics import (
    RegionMeasures,
    rand_index,
    segmentation_covering,
    variation_of_information,
)

# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def covering_brute_force(pred: np.ndarray, gt: np.ndarray) -> float:
    """C(S' → S) by looping over every pair of regions with boolean masks."""
    total = 0.0
    for g in np.unique(gt):
        region = gt == g
        best = 0.0
        for k in np.unique(pred):
            other = pred == k
            best = max(best, (region & other).sum() / (region | other).sum())
        total += region.sum() * best
    return total / gt.size


def entropy(labels: np.ndarray) -> float:
    p = np.unique(labels, return_counts=True)[1] / labels.size
    return float(-(p * np.log(p)).sum())


def voi_reference(pred: np.ndarray, gt: np.ndarray) -> float:
    a, b = pred.ravel(), gt.ravel()
    return entropy(a) + entropy(b) - 2 * mutual_info_score(b, a)


label_maps = st.integers(1, 6).flatmap(
    lambda h: st.integers(1, 6).flatmap(
        lambda w: st.tuples(
            arrays(np.int64, (h, w), elements=st.integers(0, 4)),
            arrays(np.int64, (h, w), elements=st.integers(0, 4)),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_against_references(maps):
    pred, gt = maps
    assert segmentation_covering(pred, gt) == pytest.approx(covering_brute_force(pred, gt))
    assert rand_index(pred, gt) == pytest.approx(rand_score(gt.ravel(), pred.ravel()))
    assert variation_of_information(pred, gt) == pytest.approx(voi_reference(pred, gt), abs=1e-12)


def test_larger_maps_with_sparse_and_large_ids():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 7, (40, 50)) * 1000 - 3000  # negative and widely spaced ids
    pred = rng.integers(0, 30, (40, 50))
    assert segmentation_covering(pred, gt) == pytest.approx(covering_brute_force(pred, gt))
    assert rand_index(pred, gt) == pytest.approx(rand_score(gt.ravel(), pred.ravel()))
    assert variation_of_information(pred, gt) == pytest.approx(voi_reference(pred, gt))


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_two_by_two_by_hand():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    # GT region {0,1}: best IoU 1/2 (with pred 0) or 1/4 (pred 1) → 1/2; region {2,3}: 2/3.
    assert segmentation_covering(pred, gt) == pytest.approx((2 * 0.5 + 2 * 2 / 3) / 4)
    # 6 pairs; they disagree on (0,1), (1,2), (1,3) only → 3/6.
    assert rand_index(pred, gt) == pytest.approx(0.5)
    # H(gt) = ln 2, H(pred) = H(1/4, 3/4), H(joint) = H(1/4, 1/4, 1/2).
    h_pred = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    h_joint = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert variation_of_information(pred, gt) == pytest.approx(2 * h_joint - math.log(2) - h_pred)


def test_three_by_three_by_hand():
    gt = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    pred = np.zeros((3, 3), dtype=int)  # one segment
    # Each GT region's IoU with the whole image is its size / 9.
    assert segmentation_covering(pred, gt) == pytest.approx((16 + 4 + 9) / 81)
    # Agreeing pairs are those inside a GT region: C(4,2) + C(2,2) + C(3,2) = 10 of 36.
    assert rand_index(pred, gt) == pytest.approx(10 / 36)
    # VoI = H(gt) when the prediction is a single segment.
    p = np.array([4, 2, 3]) / 9
    assert variation_of_information(pred, gt) == pytest.approx(-(p * np.log(p)).sum())


def test_perfect_prediction_and_permuted_ids():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 5, (12, 9))
    permuted = np.array([7, 3, 11, 0, 42])[gt]
    assert segmentation_covering(permuted, gt) == pytest.approx(1.0)
    assert rand_index(permuted, gt) == 1.0
    assert variation_of_information(permuted, gt) == pytest.approx(0.0, abs=1e-12)
    pred = rng.integers(0, 4, gt.shape)
    relabeled = np.array([9, 2, 5, 1])[pred]
    for fn in (segmentation_covering, rand_index, variation_of_information):
        assert fn(relabeled, gt) == pytest.approx(fn(pred, gt))


def test_one_pixel_and_errors():
    assert rand_index(np.array([[3]]), np.array([[1]])) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        rand_index(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        segmentation_covering(np.zeros((2, 2)), np.zeros((2, 2), int))


def test_ignore_index_removes_pixels_from_both_maps():
    gt = np.array([[0, 0, 255], [1, 1, 255]])
    pred = np.array([[4, 4, 9], [5, 5, 4]])
    for fn in (segmentation_covering, rand_index, variation_of_information):
        assert fn(pred, gt, ignore_index=255) == pytest.approx(fn(pred[:, :2], gt[:, :2]))


# ---------------------------------------------------------------------------------------------
# The torchmetrics twin
# ---------------------------------------------------------------------------------------------


def test_metric_averages_annotations_then_images():
    rng = np.random.default_rng(2)
    images = [
        (rng.integers(0, 4, (10, 12)), [rng.integers(0, 3, (10, 12)) for _ in range(a)])
        for a in (1, 3, 5)
    ]
    metric = RegionMeasures()
    for pred, gts in images:
        metric.update(torch.from_numpy(pred), torch.from_numpy(np.stack(gts)))
    scores = metric.compute()
    assert set(scores) == {"covering", "pri", "voi", "covering_pooled", "n_annotation_pixels"}
    for key, fn in (
        ("covering", segmentation_covering),
        ("pri", rand_index),
        ("voi", variation_of_information),
    ):
        expected = np.mean([np.mean([fn(p, g) for g in gts]) for p, gts in images])
        assert scores[key].dtype == torch.float64
        assert float(scores[key]) == pytest.approx(expected, abs=1e-9)


def test_pooled_covering_weighs_every_annotation_pixel_like_the_benchmark():
    """Σ over all annotations of Σ |R|·max O / all their pixels: an image with more annotations
    and more pixels weighs more than in the per-image mean (brute-force regions as reference)."""
    rng = np.random.default_rng(4)
    images = [
        (rng.integers(0, 3, (6, 7)), [rng.integers(0, 2, (6, 7))]),
        (rng.integers(0, 5, (12, 9)), [rng.integers(0, 4, (12, 9)) for _ in range(4)]),
    ]
    metric = RegionMeasures()
    covered, pixels = 0.0, 0
    for pred, gts in images:
        metric.update(pred, gts)
        covered += sum(covering_brute_force(pred, gt) * gt.size for gt in gts)
        pixels += sum(gt.size for gt in gts)
    scores = metric.compute()
    assert float(scores["covering_pooled"]) == pytest.approx(covered / pixels, abs=1e-9)
    assert float(scores["n_annotation_pixels"]) == 6 * 7 + 4 * 12 * 9
    per_image = np.mean([np.mean([covering_brute_force(p, g) for g in gts]) for p, gts in images])
    assert float(scores["covering"]) == pytest.approx(per_image, abs=1e-9)
    assert abs(float(scores["covering_pooled"]) - per_image) > 1e-3  # the two poolings differ


def test_metric_sums_like_a_distributed_reduction():
    rng = np.random.default_rng(3)
    data = [(rng.integers(0, 4, (8, 8)), [rng.integers(0, 3, (8, 8))]) for _ in range(4)]
    whole, first, second = RegionMeasures(), RegionMeasures(), RegionMeasures()
    for i, (pred, gts) in enumerate(data):
        whole.update(pred, gts)
        (first if i % 2 else second).update(pred, gts)
    merged = first.merge_state(second) or first
    for key, value in whole.compute().items():
        assert torch.equal(value, merged.compute()[key])  # integer states: bit-identical


def test_metric_connectivity_option_and_empty_state():
    pred = np.array([[0, 1, 0], [0, 1, 0]])  # label 0 is in two pieces
    gt = np.array([[0, 1, 2], [0, 1, 2]])
    raw, split = RegionMeasures(), RegionMeasures(connectivity=4)
    raw.update(pred, [gt])
    split.update(pred, [gt])
    assert float(split.compute()["pri"]) == 1.0 > float(raw.compute()["pri"])
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(RegionMeasures().compute()["covering"])
    with pytest.raises(ValueError, match="connectivity"):
        RegionMeasures(connectivity=6)
    with pytest.raises(ValueError, match="shape"):
        RegionMeasures().update(pred, [gt[:, :2]])
