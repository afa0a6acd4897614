"""From a fit's labels to segments: the vote, the split, the merge, and the default's behaviour on
images whose right answer is known (one flat colour; two flat halves with noise)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as connected_label

from dynaseg.baselines import FelzenszwalbSegmenter
from dynaseg.config import compose_config
from dynaseg.pipeline import build_segmenter, build_segments
from dynaseg.segments import Segments, merge_small, vote_in


def vote_by_loop(labels: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """The majority label of each superpixel, one superpixel at a time (ties: smaller label)."""
    out = np.empty_like(labels)
    for s in np.unique(superpixels):
        inside = superpixels == s
        values, counts = np.unique(labels[inside], return_counts=True)
        out[inside] = values[np.argmax(counts)]
    return out


def test_vote_matches_a_loop_over_superpixels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 5, (9, 11))
        superpixels = rng.integers(0, 7, (9, 11))
        assert np.array_equal(vote_in(labels, superpixels), vote_by_loop(labels, superpixels))


def test_merge_leaves_no_piece_below_min_size_and_numbers_ids_densely():
    rng = np.random.default_rng(1)
    for min_size in (2, 5, 20):
        pieces = connected_label(rng.integers(0, 3, (16, 16)), background=-1, connectivity=1)
        merged = merge_small(pieces, min_size)
        sizes = np.bincount(merged.ravel())
        assert sizes.min() >= min_size
        assert np.array_equal(np.unique(merged), np.arange(merged.max() + 1))
        kept = np.bincount(pieces.ravel())[pieces] >= min_size
        # a piece large enough keeps all its pixels together, under one id of its own
        for piece in np.unique(pieces[kept]):
            assert np.unique(merged[pieces == piece]).size == 1


def test_merge_takes_the_nearest_large_piece_and_keeps_the_largest_when_none_is_large():
    pieces = np.array([[0, 0, 0, 0, 1, 2, 2, 2, 2, 2]])
    assert merge_small(pieces, 3).tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    assert merge_small(np.array([[0, 1, 1]]), 10).tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="min_size"):
        merge_small(pieces, 0)


def test_segments_split_classes_into_connected_pieces_only_when_asked():
    labels = np.array([[0, 1, 0], [0, 1, 0]])  # class 0 on both sides of class 1
    image = np.zeros((2, 3, 3), np.uint8)
    assert np.unique(Segments(connected=True)(labels, image)).size == 3
    as_fitted = Segments()
    assert as_fitted.changes_nothing and as_fitted(labels, image) is labels
    voted = Segments(superpixels=FelzenszwalbSegmenter(scale=1, min_size=1))
    assert not voted.changes_nothing


def default_fit(image: np.ndarray, seed: int) -> np.ndarray:
    """What ``dynaseg segment`` writes for an image, through the same builders."""
    config = compose_config("segment")
    segmenter, _, segments = build_segmenter(config, None)
    assert segments is not None
    return segments(segmenter.fit(image, seed=seed).labels, image)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_gives_one_segment_for_a_flat_image(seed):
    flat = np.full((48, 64, 3), 120, np.uint8)
    assert np.unique(default_fit(flat, seed)).size == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_gives_two_segments_for_two_flat_halves_with_noise(seed):
    rng = np.random.default_rng(seed)
    halves = np.zeros((48, 64, 3))
    halves[:, :32], halves[:, 32:] = (200, 60, 40), (40, 90, 200)
    noisy = np.clip(halves + rng.normal(0, 8, halves.shape), 0, 255).astype(np.uint8)
    segments = default_fit(noisy, seed)
    assert np.unique(segments).size == 2
    assert np.unique(segments[:, :32]).size == 1 and np.unique(segments[:, 32:]).size == 1


def test_paper_presets_keep_the_labels_as_fitted_and_the_default_records_its_step():
    paper = compose_config("run", ["+experiment=bsd_fsf_cnn"])
    assert build_segments(paper) is None
    assert paper.backbone.padding_mode == "zeros" and paper.max_iter == 1000
    default = compose_config("run", ["+experiment=bsd_default"])
    assert default.backbone.padding_mode == "replicate"
    _, settings, segments = build_segmenter(default, None)
    assert settings["segments"]["connected"] is True and segments is not None
    assert "segments" not in build_segmenter(paper, None)[1]
    # ids that must mean the same across images are left alone
    assert build_segments(compose_config("segment", ["warm_start=true"])) is None
