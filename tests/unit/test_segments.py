"""From a fit's labels to segments: the vote, the split, the merge, and the default's behaviour on
images whose right answer is known (one flat colour; two flat halves with noise)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2lab
from skimage.measure import label as connected_label

from dynaseg.baselines import FelzenszwalbSegmenter
from dynaseg.config import compose_config
from dynaseg.pipeline import build_segmenter, build_segments
from dynaseg.segments import Segments, cut_by, merge_similar, merge_small, vote_in


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


def gradient_strips() -> tuple[np.ndarray, np.ndarray]:
    """Five grey strips, 8 grey levels apart: neighbours 8·√3 ≈ 13.9 RGB apart, the ends 55."""
    strips = np.repeat(np.arange(5), 4)[None, :].repeat(3, axis=0)
    image = np.repeat((strips * 8).astype(np.uint8)[..., None], 3, axis=2)
    return strips, image


def test_single_linkage_chains_a_gradient_and_mean_linkage_does_not():
    strips, image = gradient_strips()
    assert np.unique(merge_similar(strips, image, 15, "single")).size == 1
    # the closest pair merges into a mean 4·√3 from each; the next strip is then 12·√3 ≈ 20.8
    # away (> 15), so pairs form and no segment spans more than two strips: 3 segments
    merged = merge_similar(strips, image, 15, "mean")
    assert np.unique(merged).size == 3
    for segment in np.unique(merged):
        assert np.unique(strips[merged == segment]).size <= 2
    assert np.unique(merge_similar(strips, image, 13, "mean")).size == 5
    with pytest.raises(ValueError, match="linkage"):
        merge_similar(strips, image, 15, "complete")


def test_ward_linkage_is_scikit_learns_connected_ward_clustering():
    """From single pixels, the Ward merge is agglomerative Ward clustering of the pixel colours
    under 8-neighbour connectivity (scikit-image's RAG joins diagonal neighbours); scikit-learn
    reports its merge heights as √(2·ΔSSE), ours is √ΔSSE, hence the √2."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score
    from sklearn.neighbors import radius_neighbors_graph

    height, width, threshold = 6, 7, 3.0
    pixels = np.arange(height * width).reshape(height, width)
    grid = np.argwhere(np.ones((height, width)))
    neighbours = radius_neighbors_graph(grid, radius=1.5)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        image = rng.normal(0, 1, (height, width, 3)) + 4.0 * (np.arange(width) >= 3)[:, None]
        ours = merge_similar(pixels, image, threshold, "ward")
        theirs = AgglomerativeClustering(
            n_clusters=None,
            distance_threshold=threshold * np.sqrt(2),
            linkage="ward",
            connectivity=neighbours,
            compute_full_tree=True,
        ).fit_predict(image.reshape(-1, 3))
        assert np.unique(ours).size > 1
        assert adjusted_rand_score(ours.ravel(), theirs) == 1.0


def test_ward_merge_weighs_a_colour_difference_by_the_smaller_segment():
    # a 2-pixel speck 100 grey levels off a 198-pixel region: 100·√3·√(2·198/200) ≈ 243.7
    image = np.zeros((10, 20, 3), np.uint8)
    segments = np.zeros((10, 20), np.int64)
    image[0, :2], segments[0, :2] = 100, 1
    assert np.unique(merge_similar(segments, image, 250, "ward")).size == 1
    assert np.unique(merge_similar(segments, image, 240, "ward")).size == 2
    # the same colour step between two halves of 100 pixels each needs 100·√3·√50 ≈ 1224.7
    halves = np.zeros((10, 20, 3), np.uint8)
    halves[:, 10:] = 100
    split = np.repeat((np.arange(20) >= 10)[None], 10, axis=0).astype(np.int64)
    assert np.unique(merge_similar(split, halves, 1200, "ward")).size == 2
    assert np.unique(Segments(ward_threshold=1230)(split, halves)).size == 1
    with pytest.raises(ValueError, match="ward_threshold"):
        Segments(ward_threshold=-1)


def test_lab_merge_uses_cielab_distances():
    strips, image = gradient_strips()
    lab = rgb2lab(image)
    gap = float(np.linalg.norm(lab[0, 4] - lab[0, 0]))  # ΔE between strips 0 and 1
    step = Segments(colour_threshold=gap + 0.5, colour_space="lab", linkage="single")
    assert np.unique(step(strips, image)).size < 5
    step = Segments(colour_threshold=gap - 0.5, colour_space="lab", linkage="single")
    joined = step(strips, image)
    assert np.unique(joined[:, :8]).size == 2  # the two darkest strips stay apart
    with pytest.raises(ValueError, match="colour_space"):
        Segments(colour_space="hsv")


def test_segments_split_classes_into_connected_pieces_only_when_asked():
    labels = np.array([[0, 1, 0], [0, 1, 0]])  # class 0 on both sides of class 1
    image = np.zeros((2, 3, 3), np.uint8)
    assert np.unique(Segments(connected=True)(labels, image)).size == 3
    as_fitted = Segments()
    assert as_fitted.changes_nothing and as_fitted(labels, image) is labels
    voted = Segments(superpixels=FelzenszwalbSegmenter(scale=1, min_size=1))
    assert not voted.changes_nothing


def default_fit(image: np.ndarray, seed: int, step: str) -> np.ndarray:
    """What ``dynaseg segment segments=<step>`` writes for an image, through the same builders."""
    config = compose_config("segment", [f"segments={step}"])
    segmenter, _, segments = build_segmenter(config, None)
    assert segments is not None
    return segments(segmenter.fit(image, seed=seed).labels, image)


STEPS = pytest.mark.parametrize("step", ["voted", "voted_lab", "voted_cut"])


@STEPS
@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_gives_one_segment_for_a_flat_image(seed, step):
    flat = np.full((48, 64, 3), 120, np.uint8)
    assert np.unique(default_fit(flat, seed, step)).size == 1


@STEPS
@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_gives_two_segments_for_two_flat_halves_with_noise(seed, step):
    rng = np.random.default_rng(seed)
    halves = np.zeros((48, 64, 3))
    halves[:, :32], halves[:, 32:] = (200, 60, 40), (40, 90, 200)
    noisy = np.clip(halves + rng.normal(0, 8, halves.shape), 0, 255).astype(np.uint8)
    segments = default_fit(noisy, seed, step)
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


def test_cut_splits_a_label_where_a_region_boundary_crosses_it():
    labels = np.zeros((4, 6), np.int64)
    labels[:, 4:] = 1
    regions = np.zeros((4, 6), np.int64)
    regions[:, 2:] = 7  # crosses label 0 at column 2, leaves label 1 whole
    expected = np.array([[0, 0, 1, 1, 2, 2]] * 4)
    assert np.array_equal(cut_by(labels, regions), expected)


def test_segments_cut_a_shared_label_at_a_coarse_region_boundary():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200  # two flat halves the fit gave one label
    regions = FelzenszwalbSegmenter(scale=100, sigma=0, min_size=2)  # no blur: the cut at 4
    one_label = np.zeros((8, 8), np.int64)
    assert np.unique(Segments(connected=True)(one_label, image)).size == 1
    cut = Segments(connected=True, regions=regions)(one_label, image)
    assert np.unique(cut[:, :4]).size == 1 and np.unique(cut[:, 4:]).size == 1
    assert cut[0, 0] != cut[0, 7]
