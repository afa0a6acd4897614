"""Tests for dynaseg.metrics against independent references (loops, flood fill, brute force)."""

from __future__ import annotations

import copy
import itertools
from collections import deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from sklearn.metrics.cluster import contingency_matrix

from dynaseg.metrics import (
    DatasetHungarianIoU,
    ImageHungarianIoU,
    RegionMeasures,
    SegmentBestIoU,
    best_iou_per_segment,
    hungarian_match,
    matched_scores,
    relabel_connected,
)
from dynaseg.metrics.base import contingency

# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def flood_fill(labels: np.ndarray, connectivity: int) -> np.ndarray:
    """Components by BFS, numbered in raster order of their first pixel."""
    h, w = labels.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    out = np.full((h, w), -1, dtype=np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            if out[y, x] >= 0:
                continue
            out[y, x] = n
            queue = deque([(y, x)])
            while queue:
                cy, cx = queue.popleft()
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if (
                        0 <= ny < h
                        and 0 <= nx < w
                        and out[ny, nx] < 0
                        and labels[ny, nx] == labels[y, x]
                    ):
                        out[ny, nx] = n
                        queue.append((ny, nx))
            n += 1
    return out


def brute_best_iou(pred: np.ndarray, gt: np.ndarray, ignore: int | None = None) -> list[float]:
    """Kim et al.'s loop: per GT label, max IoU over predicted labels, sizes on kept pixels."""
    keep = np.ones(gt.shape, bool) if ignore is None else gt != ignore
    out = []
    for g in sorted(set(gt[keep].tolist())):
        gm = (gt == g) & keep
        best = 0.0
        for k in set(pred[keep].tolist()):
            km = (pred == k) & keep
            inter = int((gm & km).sum())
            best = max(best, inter / (int(gm.sum()) + int(km.sum()) - inter))
        out.append(best)
    return out


def brute_assignments(confusion: np.ndarray):
    """All maximum-cardinality one-to-one class -> cluster maps, as per-class arrays."""
    n_cls, n_clu = confusion.shape
    if n_cls <= n_clu:
        for cols in itertools.permutations(range(n_clu), n_cls):
            yield np.array(cols)
    else:
        for rows in itertools.permutations(range(n_cls), n_clu):
            match = np.full(n_cls, -1)
            match[list(rows)] = np.arange(n_clu)
            yield match


def reference_scores(confusion: np.ndarray, match: np.ndarray, things) -> dict[str, float]:
    """Per-class TP/FP/FN by explicit loops for a given assignment."""
    n_cls, n_clu = confusion.shape
    ious = []
    tp_total = 0
    for c in range(n_cls):
        m = match[c]
        tp = int(confusion[c, m]) if m >= 0 else 0
        fp = sum(int(confusion[r, m]) for r in range(n_cls) if r != c) if m >= 0 else 0
        fn = sum(int(confusion[c, j]) for j in range(n_clu) if j != m)
        tp_total += tp
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))

    def mean(xs):
        xs = [x for x in xs if x == x]
        return sum(xs) / len(xs) if xs else float("nan")

    total = int(confusion.sum())
    return {
        "iou": ious,
        "miou": mean(ious),
        "pixel_accuracy": tp_total / total if total else float("nan"),
        "things_miou": mean([ious[c] for c in range(n_cls) if c in things]),
        "stuff_miou": mean([ious[c] for c in range(n_cls) if c not in things]),
    }


def confusion_by_loops(pred, target, n_classes: int, n_clusters: int) -> np.ndarray:
    conf = np.zeros((n_classes, n_clusters), np.int64)
    for p, t in zip(np.ravel(pred), np.ravel(target), strict=True):
        if 0 <= t < n_classes:
            conf[t, p] += 1
    return conf


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


def as_floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def assert_close_dicts(a: dict, b: dict) -> None:
    """Equal up to the metrics' fixed-point rounding (< 2**-33 per summed score)."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-9, err_msg=k)


# ---------------------------------------------------------------------------------------------
# relabel_connected
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("n_labels", [2, 5, 40])
@pytest.mark.parametrize("seed", range(4))
def test_relabel_matches_flood_fill(connectivity, n_labels, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, size=(9 + seed, 13))
    if seed % 2:  # negative, huge and boolean ids take the sorting path of the id compaction
        labels = np.array([-(2**40), -1, 7, 2**62])[labels % 4] if n_labels > 2 else labels > 0
    np.testing.assert_array_equal(
        relabel_connected(labels, connectivity), flood_fill(labels, connectivity)
    )


def test_relabel_hand_cases():
    checker = np.array([[0, 1], [1, 0]])
    assert relabel_connected(checker, 4).tolist() == [[0, 1], [2, 3]]
    assert relabel_connected(checker, 8).tolist() == [[0, 1], [1, 0]]
    assert relabel_connected(checker, None) is checker
    ring = np.array([[5, 5, 5], [5, 9, 5], [5, 5, 5]])
    assert relabel_connected(ring).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert relabel_connected(np.zeros((0, 3), int)).shape == (0, 3)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_relabel_bsds_sized_many_components(connectivity):
    # 481 x 321 noise: ~10^5 tiny components, the hard case for a per-component loop.
    rng = np.random.default_rng(0)
    for k in (2, 17, 300):
        labels = rng.integers(0, k, size=(321, 481))
        out = relabel_connected(labels, connectivity)
        structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        ref = np.zeros(labels.shape, np.int64)
        offset = 0
        for v in np.unique(labels):
            comp, n = ndimage.label(labels == v, structure)
            ref[comp > 0] = comp[comp > 0] + offset
            offset += n
        assert out.max() + 1 == offset
        assert same_partition(out, ref)


def test_relabel_rejects_bad_args():
    with pytest.raises(ValueError, match="connectivity"):
        relabel_connected(np.zeros((2, 2), int), 6)
    with pytest.raises(ValueError, match="integer"):
        relabel_connected(np.zeros((2, 2)), 4)
    with pytest.raises(ValueError, match="2-D"):
        relabel_connected(np.zeros((2, 2, 2), int), 4)


# ---------------------------------------------------------------------------------------------
# best_iou_per_segment
# ---------------------------------------------------------------------------------------------


def test_best_iou_hand_case():
    gt = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    pred = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_allclose(best_iou_per_segment(pred, gt), [4 / 6, 2 / 6, 1.0])


def test_best_iou_ignore_removes_pixels_from_both_counts():
    gt = np.array([[0, 0, 255], [1, 1, 255]])
    pred = np.array([[0, 0, 0], [0, 1, 1]])
    # Kept pixels: |k0| = 3, |k1| = 1.  g0: 2/(2+3-2); g1: max(1/(2+3-1), 1/(2+1-1)).
    np.testing.assert_allclose(best_iou_per_segment(pred, gt, ignore_index=255), [2 / 3, 1 / 2])
    # Without ignoring, 255 is a segment and |k| counts the void pixels too.
    np.testing.assert_allclose(best_iou_per_segment(pred, gt), [2 / 4, 1 / 3, 1 / 3])


@pytest.mark.parametrize("seed", range(6))
def test_best_iou_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, size=(7, 8))
    gt[rng.random(gt.shape) < 0.2] = 255
    # Negative and huge ids exercise the sorting path of the id compaction.
    pred = rng.choice([-3, 0, 2, 7, 10**9], size=gt.shape)
    for ignore in (None, 255):
        np.testing.assert_allclose(
            best_iou_per_segment(pred, gt, ignore), brute_best_iou(pred, gt, ignore)
        )


@pytest.mark.parametrize("seed", range(4))
def test_contingency_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    gt = rng.choice([-5, 0, 3, 255, 10**9], size=(9, 11))
    pred = rng.integers(0, 30, size=gt.shape) * (seed + 1)
    for ignore in (None, 255):
        keep = np.ones(gt.shape, bool) if ignore is None else gt != ignore
        ref = contingency_matrix(gt[keep], pred[keep])  # rows / columns: sorted present labels
        t = contingency(pred, gt, ignore)
        rows = np.unique(t.gt_ids, return_inverse=True)[1]
        cols = np.unique(t.pred_ids, return_inverse=True)[1]
        # Cells in (GT, pred) order, as sklearn's nonzero() lists them row by row.
        np.testing.assert_array_equal(t.counts, ref[ref.nonzero()])
        np.testing.assert_array_equal(np.stack([rows, cols]), np.stack(ref.nonzero()))
        np.testing.assert_array_equal(t.gt_sizes[t.gt_sizes > 0], ref.sum(axis=1))
        np.testing.assert_array_equal(t.pred_sizes[t.pred_sizes > 0], ref.sum(axis=0))
        assert t.counts.dtype == t.gt_sizes.dtype == np.int64


def test_best_iou_all_ignored_and_shape_mismatch():
    assert best_iou_per_segment(np.zeros((2, 2), int), np.full((2, 2), 255), 255).size == 0
    with pytest.raises(ValueError, match="shape"):
        best_iou_per_segment(np.zeros((2, 2), int), np.zeros((2, 3), int))


# ---------------------------------------------------------------------------------------------
# SegmentBestIoU
# ---------------------------------------------------------------------------------------------


def test_segment_metric_pooled_not_per_image_mean():
    m = SegmentBestIoU(connectivity=None)
    m.update(np.zeros((3, 3), int), [np.zeros((3, 3), int)])  # one segment, IoU 1
    gt = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    pred = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1]])
    m.update(pred, [gt])  # IoUs 2/3, 1/3, 1
    out = m.compute()
    pooled, per_image_mean = (1 + 2 / 3 + 1 / 3 + 1) / 4, (1 + 2 / 3) / 2
    assert float(out["all"]) == pytest.approx(pooled)
    assert float(out["all"]) != pytest.approx(per_image_mean)
    assert int(out["n_all"]) == 4
    assert float(out["segments_per_image"]) == pytest.approx(1.5)


def test_segment_metric_fine_coarse_first_on_ties():
    pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    a0 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])  # 2 labels
    a1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])  # 3 labels
    a2 = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 2, 2], [2, 2, 2, 2]])  # 3 labels
    a3 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]])  # 2 labels
    annotations = [a0, a1, a2, a3]
    refs = [brute_best_iou(pred, a) for a in annotations]
    assert sum(refs[1]) != pytest.approx(sum(refs[2]))  # the tie choice is observable
    assert sum(refs[0]) != pytest.approx(sum(refs[3]))
    m = SegmentBestIoU(connectivity=None)
    m.update(torch.as_tensor(pred), annotations)
    out = m.compute()
    all_ = [v for r in refs for v in r]
    assert float(out["all"]) == pytest.approx(np.mean(all_))
    assert float(out["fine"]) == pytest.approx(np.mean(refs[1]))
    assert float(out["coarse"]) == pytest.approx(np.mean(refs[0]))
    expected_mean = (np.mean(all_) + np.mean(refs[1]) + np.mean(refs[0])) / 3
    assert float(out["mean"]) == pytest.approx(expected_mean)
    assert (int(out["n_all"]), int(out["n_fine"]), int(out["n_coarse"])) == (10, 3, 2)


def test_segment_metric_relabels_prediction_first():
    # One cluster id in two disconnected pieces; GT has the same two pieces as segments.
    pred = np.array([[0, 1, 0], [0, 1, 0]])
    gt = np.array([[0, 1, 2], [0, 1, 2]])
    raw, cc = SegmentBestIoU(connectivity=None), SegmentBestIoU(connectivity=4)
    for m in (raw, cc):
        m.update(pred, gt)  # a single H x W annotation is accepted (VOC)
    assert float(raw.compute()["all"]) == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert float(cc.compute()["all"]) == pytest.approx(1.0)
    assert float(cc.compute()["segments_per_image"]) == 3


def test_segment_metric_ignore_index_and_stack_input():
    gt = np.array([[0, 0, 255], [1, 1, 255]])
    pred = np.array([[0, 0, 0], [0, 1, 1]])
    m = SegmentBestIoU(connectivity=None, ignore_index=255)
    m.update(pred, np.stack([gt, gt]))
    out = m.compute()
    assert float(out["all"]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert int(out["n_all"]) == 4


def test_segment_metric_matches_brute_force_with_cc():
    rng = np.random.default_rng(0)
    m = SegmentBestIoU(connectivity=8)
    all_, fine, coarse = [], [], []
    for _ in range(3):
        pred = rng.integers(0, 3, size=(6, 7))
        gts = [rng.integers(0, n, size=(6, 7)) for n in (2, 4, 3)]
        m.update(pred, gts)
        refs = [brute_best_iou(flood_fill(pred, 8), g) for g in gts]
        sizes = [len(r) for r in refs]
        all_ += [v for r in refs for v in r]
        fine += refs[int(np.argmax(sizes))]
        coarse += refs[int(np.argmin(sizes))]
    out = m.compute()
    assert float(out["all"]) == pytest.approx(np.mean(all_))
    assert float(out["fine"]) == pytest.approx(np.mean(fine))
    assert float(out["coarse"]) == pytest.approx(np.mean(coarse))


def test_segment_metric_rejects_bad_args():
    with pytest.raises(ValueError, match="connectivity"):
        SegmentBestIoU(connectivity=3)
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentBestIoU(ignore_index="void")
    m = SegmentBestIoU()
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((2, 2), int), [np.zeros((2, 3), int)])
    with pytest.raises(ValueError, match="at least one"):
        m.update(np.zeros((2, 2), int), [])


# ---------------------------------------------------------------------------------------------
# Hungarian matching
# ---------------------------------------------------------------------------------------------


def test_matched_scores_hand_square():
    conf = np.array([[5, 1, 0], [2, 0, 6], [0, 3, 1]])
    s = matched_scores(conf, things=[0])
    assert s["match"].tolist() == [0, 2, 1]
    np.testing.assert_allclose(s["iou"], [5 / 8, 6 / 9, 3 / 5])
    assert s["miou"] == pytest.approx((5 / 8 + 6 / 9 + 3 / 5) / 3)
    assert s["pixel_accuracy"] == pytest.approx(14 / 18)
    assert s["things_miou"] == pytest.approx(5 / 8)
    assert s["stuff_miou"] == pytest.approx((6 / 9 + 3 / 5) / 2)


def test_matched_scores_more_clusters_counts_unmatched_as_missed():
    conf = np.array([[4, 0, 2], [0, 3, 1]])
    s = matched_scores(conf, things=[0])
    # Cluster 2 is unmatched: its 3 pixels are FN of classes 0 and 1, FP of nothing.
    np.testing.assert_allclose(s["iou"], [4 / 6, 3 / 4])
    assert s["pixel_accuracy"] == pytest.approx(7 / 10)


def test_matched_scores_fewer_clusters_and_absent_class():
    s = matched_scores(np.array([[4], [1], [0]]), things=slice(0, 1))
    assert s["match"].tolist() == [0, -1, -1]
    np.testing.assert_allclose(s["iou"], [0.8, 0.0, np.nan])
    assert s["miou"] == pytest.approx(0.4)
    assert s["pixel_accuracy"] == pytest.approx(0.8)
    assert s["things_miou"] == pytest.approx(0.8)
    assert s["stuff_miou"] == 0.0


def test_matched_scores_empty_is_nan():
    s = matched_scores(np.zeros((3, 3), int), things=[0])
    assert all(np.isnan(s[k]) for k in ("miou", "pixel_accuracy", "things_miou", "stuff_miou"))


@pytest.mark.parametrize("shape", [(3, 3), (3, 4), (4, 3), (2, 5), (4, 4)])
@pytest.mark.parametrize("seed", range(5))
def test_hungarian_matches_brute_force(shape, seed):
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, 20, size=shape) * rng.integers(0, 2, size=shape)
    match = hungarian_match(conf)
    gain = lambda m: sum(int(conf[c, k]) for c, k in enumerate(m) if k >= 0)  # noqa: E731
    best = max(map(gain, brute_assignments(conf)))
    optima = [m for m in brute_assignments(conf) if gain(m) == best]
    assert gain(match) == gain(optima[0])
    rows, cols = linear_sum_assignment(conf, maximize=True)
    assert gain(match) == int(conf[rows, cols].sum())
    things = {0, 1}
    s = matched_scores(conf, things=sorted(things))
    ref = reference_scores(conf, match, things)
    for key in ("miou", "pixel_accuracy", "things_miou", "stuff_miou"):
        np.testing.assert_allclose(s[key], ref[key], err_msg=key)
    np.testing.assert_allclose(s["iou"], ref["iou"])
    if len(optima) == 1:  # a unique optimum: the scores are fully determined
        np.testing.assert_allclose(s["iou"], reference_scores(conf, optima[0], things)["iou"])


# ---------------------------------------------------------------------------------------------
# DatasetHungarianIoU / ImageHungarianIoU
# ---------------------------------------------------------------------------------------------


def test_dataset_metric_matches_reference():
    rng = np.random.default_rng(0)
    m = DatasetHungarianIoU(n_classes=4, n_clusters=5, n_things=2)
    total = np.zeros((4, 5), np.int64)
    for _ in range(3):
        target = rng.choice([0, 1, 2, 3, 255, -1], size=(5, 6))
        pred = rng.integers(0, 5, size=(5, 6))
        m.update(torch.as_tensor(pred), torch.as_tensor(target))
        total += confusion_by_loops(pred, target, 4, 5)
    np.testing.assert_array_equal(m.confusion.numpy(), total)
    ref = reference_scores(total, hungarian_match(total), {0, 1})
    out = as_floats(m.compute())
    assert_close_dicts(out, {k: ref[k] for k in out})


def test_dataset_metric_validates():
    with pytest.raises(ValueError, match="n_things"):
        DatasetHungarianIoU(n_classes=5, n_things=6)
    with pytest.raises(ValueError, match="n_clusters"):
        DatasetHungarianIoU(n_clusters=0)
    m = DatasetHungarianIoU(n_classes=3, n_clusters=3, n_things=1)
    with pytest.raises(ValueError, match="pred ids"):
        m.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        m.update(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="elements"):
        m.update(np.array([0, 1, 2]), np.array([0, 1]))


def test_image_metric_hand_cases():
    m = ImageHungarianIoU(n_classes=3, n_things=1)
    # Class 2 is absent but gets a non-empty cluster in the square matching: IoU 0.
    m.update(np.array([[0, 1], [2, 2]]), np.array([[0, 0], [1, 1]]))
    out = as_floats(m.compute())
    assert out["miou"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)

    m = ImageHungarianIoU(n_classes=2, n_things=1)
    # 4 clusters > 2 classes: rectangular; the two unmatched clusters are missed class-0 pixels.
    m.update(np.array([[0, 1, 2], [3, 3, 3]]), np.array([[0, 0, 0], [1, 1, 1]]))
    out = as_floats(m.compute())
    assert out["miou"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["pixel_accuracy"] == pytest.approx(4 / 6)


def test_image_metric_undefined_and_group_counts():
    m = ImageHungarianIoU(n_classes=2, n_things=1)
    m.update(np.array([[4, 4]]), np.array([[255, 255]]))  # no labelled pixel
    m.update(np.array([[4, 4]]), np.array([[1, 1]]))  # stuff only, one cluster
    out = as_floats(m.compute())
    assert out["n_undefined"] == 1 and out["n_images"] == 1
    assert out["n_things_images"] == 0 and out["n_stuff_images"] == 1
    assert np.isnan(out["things_miou"])
    assert out["stuff_miou"] == 1.0 and out["miou"] == 1.0


def test_image_metric_matches_reference_and_batch():
    rng = np.random.default_rng(1)
    preds = rng.choice([3, 8, 40, 41], size=(4, 5, 5))
    targets = rng.choice([0, 1, 2, 255], size=(4, 5, 5))
    m_batch, m_single = ImageHungarianIoU(3, n_things=1), ImageHungarianIoU(3, n_things=1)
    m_batch.update(torch.as_tensor(preds), torch.as_tensor(targets))
    miou, pacc = [], []
    for p, t in zip(preds, targets, strict=True):
        m_single.update(p, t)
        keep = t != 255
        ids = {v: i for i, v in enumerate(sorted(set(p[keep].tolist())))}
        clusters = np.array([ids[v] for v in p[keep]])
        conf = confusion_by_loops(clusters, t[keep], 3, max(3, len(ids)))
        gains = {
            tuple(a): sum(conf[c, k] for c, k in enumerate(a) if k >= 0)
            for a in brute_assignments(conf)
        }
        best = max(gains.values())
        refs = [reference_scores(conf, np.array(a), {0}) for a, g in gains.items() if g == best]
        pacc.append(refs[0]["pixel_accuracy"])
        miou.append({round(r["miou"], 12) for r in refs})  # every optimal matching's mIoU
    out_b, out_s = as_floats(m_batch.compute()), as_floats(m_single.compute())
    assert_close_dicts(out_b, out_s)
    assert out_b["pixel_accuracy"] == pytest.approx(np.mean(pacc))
    lo, hi = np.mean([min(x) for x in miou]), np.mean([max(x) for x in miou])
    assert lo - 1e-9 <= out_b["miou"] <= hi + 1e-9
    assert out_b["n_images"] == 4


# ---------------------------------------------------------------------------------------------
# Metric plumbing: DDP-style merging, dtypes
# ---------------------------------------------------------------------------------------------


def _images(seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        pred = rng.integers(0, 4, size=(8, 9))
        target = rng.choice([0, 1, 2, 3, 255], size=(8, 9))
        gts = [rng.integers(0, n, size=(8, 9)) for n in (2, 3, 5)]
        out.append((pred, target, gts))
    return out


FACTORIES = {
    "segment": (lambda: SegmentBestIoU(), lambda m, p, t, g: m.update(p, g)),
    "dataset": (lambda: DatasetHungarianIoU(4, 4, n_things=2), lambda m, p, t, g: m.update(p, t)),
    "image": (lambda: ImageHungarianIoU(4, n_things=2), lambda m, p, t, g: m.update(p, t)),
    "region": (lambda: RegionMeasures(), lambda m, p, t, g: m.update(p, g)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_summed_states_equal_single_process(name):
    make, update = FACTORIES[name]
    images = _images(3)
    single, rank0, rank1 = make(), make(), make()
    for i, (p, t, g) in enumerate(images):
        update(single, p, t, g)
        update(rank0 if i < 2 else rank1, p, t, g)
    # By hand, as a DDP sync does on rank 0: every state becomes the elementwise sum.
    manual = copy.deepcopy(rank0)
    for state in manual.metric_state:
        setattr(manual, state, getattr(rank0, state) + getattr(rank1, state))
    rank0.merge_state(rank1)
    expected = as_floats(single.compute())
    # Integer states make the sharded result bit-identical, not merely close.
    np.testing.assert_equal(as_floats(manual.compute()), expected)
    np.testing.assert_equal(as_floats(rank0.compute()), expected)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_states_keep_exact_dtypes(name):
    m = FACTORIES[name][0]()
    m.to(torch.float16)
    m.set_dtype(torch.bfloat16)
    assert all(v.dtype == torch.int64 for v in m.metric_state.values())
    m.reset()  # back to the defaults, which must not have been cast either
    assert all(v.dtype == torch.int64 for v in m.metric_state.values())
    pred, target, gts = _images(0)[0]
    FACTORIES[name][1](m, pred, target, gts)
    out = m.compute()
    assert all(v.dtype in (torch.float64, torch.int64) for v in out.values())
    assert next(iter(out.values())).dtype == torch.float64  # the first key is a score


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_dataset_metric_on_gpu_equals_cpu():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 27, (2, 64, 64)), rng.choice([*range(27), 255], (2, 64, 64))
    cpu, gpu = DatasetHungarianIoU(), DatasetHungarianIoU().to("cuda")
    cpu.update(torch.as_tensor(pred), torch.as_tensor(target))
    gpu.update(torch.as_tensor(pred, device="cuda"), torch.as_tensor(target, device="cuda"))
    assert gpu.confusion.dtype == torch.int64
    assert_close_dicts(as_floats(gpu.compute()), as_floats(cpu.compute()))


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

label_maps = arrays(
    np.int64,
    st.tuples(st.integers(1, 6), st.integers(1, 6)),
    elements=st.integers(0, 4),
)


@settings(max_examples=60, deadline=None)
@given(pred=label_maps, gt=label_maps, seed=st.integers(0, 2**16))
def test_properties(pred, gt, seed):
    h, w = min(pred.shape[0], gt.shape[0]), min(pred.shape[1], gt.shape[1])
    pred, gt = pred[:h, :w], gt[:h, :w]
    perm = np.random.default_rng(seed).permutation(10) + 20  # relabel predicted ids
    permuted = perm[pred]

    for cc in (None, 4, 8):
        seg, seg_perm = SegmentBestIoU(cc), SegmentBestIoU(cc)
        seg.update(pred, [gt])
        seg_perm.update(permuted, [gt])
        out = as_floats(seg.compute())
        assert all(0.0 <= out[k] <= 1.0 for k in ("all", "fine", "coarse", "mean"))
        np.testing.assert_equal(out, as_floats(seg_perm.compute()))
        if cc is not None:
            np.testing.assert_array_equal(
                relabel_connected(pred, cc), relabel_connected(permuted, cc)
            )

    perfect = SegmentBestIoU(connectivity=None)
    perfect.update(perm[gt], [gt])
    assert float(perfect.compute()["mean"]) == 1.0
    perfect_cc = SegmentBestIoU(connectivity=4)
    gt_cc = relabel_connected(gt, 4)
    perfect_cc.update(gt_cc, [gt_cc])
    assert float(perfect_cc.compute()["mean"]) == 1.0

    target = gt.copy()
    target[pred == 4] = 255
    img, img_perm = ImageHungarianIoU(4, n_things=2), ImageHungarianIoU(4, n_things=2)
    img.update(pred, target)
    img_perm.update(permuted, target)
    out = as_floats(img.compute())
    np.testing.assert_equal(out, as_floats(img_perm.compute()))
    ds = DatasetHungarianIoU(4, 5, n_things=2)
    ds.update(pred, target)
    ds_out = as_floats(ds.compute())
    for scores in (out, ds_out):
        for k in ("miou", "pixel_accuracy", "things_miou", "stuff_miou"):
            assert np.isnan(scores[k]) or 0.0 <= scores[k] <= 1.0
    # Pixel accuracy of the dataset matching is invariant to a permutation of cluster ids.
    ds_perm = DatasetHungarianIoU(4, 30, n_things=2)
    ds_perm.update(permuted, target)
    np.testing.assert_equal(ds_out["pixel_accuracy"], float(ds_perm.compute()["pixel_accuracy"]))

    labelled = (target >= 0) & (target < 4)
    if labelled.any():
        for metric in (ImageHungarianIoU(4, n_things=2), DatasetHungarianIoU(4, 30, n_things=2)):
            metric.update(perm[np.clip(target, 0, 4)], target)
            best = as_floats(metric.compute())
            assert best["miou"] == 1.0 and best["pixel_accuracy"] == 1.0
