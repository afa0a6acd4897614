"""Segments from a fit's labels: connected pieces, with specks merged into their neighbours.

A fit labels pixels with q' classes, and one class usually covers several separate places: the
region measures of BSDS500 score a map as given, so a class spread over the whole image counts as
one region there, while the best-IoU protocol splits it into pieces first. Noise and texture also
leave specks of a few pixels; each is a region of its own, which costs covering and VoI nothing
useful. These steps turn labels into what a user calls segments: connected, and none smaller
than ``min_size`` pixels. Our default (``conf/segments/voted_cut.yaml``; ``voted_lab.yaml`` and
``voted.yaml`` were the earlier ones) uses them; the paper's presets do not
(``conf/segments/as_fitted.yaml``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.graph import cut_threshold, merge_hierarchical, rag_mean_color
from torch import Tensor

from dynaseg.metrics.base import relabel_connected

LINKAGES = ("single", "mean", "ward")
"""How :func:`merge_similar` joins neighbours."""
COLOUR_SPACES = ("rgb", "lab")
"""Where :class:`Segments` measures colour distances."""


def dense_ids(segments: np.ndarray) -> np.ndarray:
    """The same partition numbered 0..K−1 in the order of the old ids, which the merges leave
    with gaps and :func:`cut_by` makes large."""
    return np.unique(segments, return_inverse=True)[1].reshape(np.shape(segments))


def merge_small(segments: np.ndarray, min_size: int) -> np.ndarray:
    """Give every pixel of a segment under ``min_size`` pixels the id of the nearest pixel of a
    segment that is not, then number the ids 0..K−1.

    Nearest (Euclidean, ``scipy.ndimage.distance_transform_edt``) rather than most similar in
    colour: a speck is noise in the fit, and its place says more about where it belongs than its
    colour, which the fit already judged. When no segment is large enough, the largest stays.

    Example:
        >>> s = np.array([[0, 0, 0, 1], [0, 0, 0, 0], [2, 2, 2, 2]])
        >>> merge_small(s, min_size=2).tolist()
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    """
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    segments = np.asarray(segments)
    sizes = np.bincount(segments.ravel())
    keep = sizes >= min_size
    if not keep.any():
        keep[np.argmax(sizes)] = True
    small = ~keep[segments]
    if small.any():
        _, nearest = ndimage.distance_transform_edt(small, return_indices=True)
        segments = segments[tuple(nearest)]
    return dense_ids(segments)


def merge_similar(
    segments: np.ndarray, image: np.ndarray, threshold: float, linkage: str = "single"
) -> np.ndarray:
    """Merge neighbouring segments whose mean colours lie closer than ``threshold`` (Euclidean,
    in the units of ``image``: 0–255 RGB, or CIELAB ΔE): the fit gives the thin band along a
    colour edge a class of its own, and a superpixel vote can leave such a band as a segment
    beside the two it parts.

    ``linkage="single"`` merges every connected group of edges lighter than the threshold at
    once (scikit-image's ``cut_threshold``), so a slow gradient chains into one segment however
    far its ends lie apart. ``linkage="mean"`` merges the closest pair first and compares the
    merged segment's new mean colour with its neighbours (``merge_hierarchical``), so no two
    segments whose means differ by more than the threshold are ever joined. ``linkage="ward"``
    does the same with Ward's distance ‖μ₁ − μ₂‖·√(n₁n₂ / (n₁ + n₂)), the square root of what
    the merge adds to the colour sum of squares: a speck of a few pixels joins a neighbour of
    quite another colour, two large regions need nearly the same mean, so the size of a
    segment and its colour are judged together rather than by a fixed minimum size.

    Example:
        >>> image = np.zeros((2, 3, 3), np.uint8); image[:, 2] = 200
        >>> merge_similar(np.array([[0, 1, 2], [0, 1, 2]]), image, threshold=10).tolist()
        [[0, 0, 1], [0, 0, 1]]
    """
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    if np.unique(segments).size < 2:  # no neighbours (and rag_mean_color fails on one node)
        return np.zeros(segments.shape, dtype=np.int64)
    rag = rag_mean_color(image, segments)
    if linkage == "single":
        merged = cut_threshold(segments, rag, threshold)
    else:
        distance = _ward_distance if linkage == "ward" else _colour_distance

        def reweigh(graph: Any, src: int, dst: int, neighbour: int) -> dict[str, float]:
            """``merge_hierarchical``'s new edge weight, from the merged node ``dst``."""
            return {"weight": distance(graph, dst, neighbour)}

        for a, b, edge in rag.edges(data=True):
            edge["weight"] = distance(rag, a, b)
        merged = merge_hierarchical(
            segments,
            rag,
            thresh=threshold,
            rag_copy=False,
            in_place_merge=True,
            merge_func=_pool_colours,
            weight_func=reweigh,
        )
    return dense_ids(merged)


def _pool_colours(graph: Any, src: int, dst: int) -> None:
    """``merge_hierarchical``'s merge step: ``dst`` takes ``src``'s pixels into its mean."""
    node, gone = graph.nodes[dst], graph.nodes[src]
    node["total color"] += gone["total color"]
    node["pixel count"] += gone["pixel count"]
    node["mean color"] = node["total color"] / node["pixel count"]


def _colour_distance(graph: Any, a: int, b: int) -> float:
    """The distance of two nodes' mean colours."""
    return float(np.linalg.norm(graph.nodes[a]["mean color"] - graph.nodes[b]["mean color"]))


def _ward_distance(graph: Any, a: int, b: int) -> float:
    """Ward's distance of two nodes: mean colour distance × √(n_a n_b / (n_a + n_b))."""
    n_a, n_b = graph.nodes[a]["pixel count"], graph.nodes[b]["pixel count"]
    return _colour_distance(graph, a, b) * float(np.sqrt(n_a * n_b / (n_a + n_b)))


def vote_in(labels: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """Each superpixel takes the label most of its pixels have (ties: the smaller label).

    Kanezaki (ICASSP 2018) refines the fit's targets this way every iteration; applied once to
    the result, it snaps label boundaries to the image's edges and clears specks inside a
    superpixel.

    Example:
        >>> labels = np.array([[0, 0, 1], [0, 1, 1]])
        >>> vote_in(labels, np.array([[0, 0, 0], [1, 1, 1]])).tolist()
        [[0, 0, 0], [1, 1, 1]]
    """
    labels = np.asarray(labels)
    superpixels = np.asarray(superpixels).ravel()
    n_labels = int(labels.max(initial=0)) + 1
    votes = np.bincount(
        superpixels * n_labels + labels.ravel(), minlength=(int(superpixels.max()) + 1) * n_labels
    ).reshape(-1, n_labels)
    return votes.argmax(axis=1)[superpixels].reshape(labels.shape)


def cut_by(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Split every label where a region boundary crosses it: one id per (label, region) pair.

    A fit with few classes gives two neighbouring objects of different colour one label when both
    differ more from the rest of the image than from each other; coarse image regions cut them
    apart again, and the merges after rejoin the cuts that look alike.

    Example:
        >>> cut_by(np.array([[0, 0, 1], [0, 0, 1]]), np.array([[0, 1, 1], [0, 1, 1]])).tolist()
        [[0, 1, 2], [0, 1, 2]]
    """
    labels, regions = np.asarray(labels), np.asarray(regions)
    pairs = labels.astype(np.int64) * (int(regions.max(initial=0)) + 1) + regions
    return dense_ids(pairs)


def as_rgb(image: np.ndarray | Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a ``(3, H, W)`` float tensor in [0, 1] or such an array."""
    if isinstance(image, Tensor):
        return (image.permute(1, 2, 0) * 255).round().byte().cpu().numpy()
    return np.asarray(image)


class Segments:
    """The step from a fit's labels to the segments written and scored.

    Args:
        superpixels: a segmenter whose labels are the superpixels to vote in first
            (:func:`vote_in`; e.g. a fine :class:`~dynaseg.baselines.FelzenszwalbSegmenter`);
            None votes nowhere.
        regions: a segmenter whose (coarse) segments cut the labels after the vote
            (:func:`cut_by`; e.g. a Felzenszwalb of scale 1000); None cuts nothing.
        connected: split every label into its 4-connected pieces (ids then number pieces, not
            classes).
        colour_threshold: merge neighbouring segments whose mean colours lie closer than this
            (:func:`merge_similar`, in ``colour_space`` units); 0 merges nothing.
        colour_space: ``"rgb"`` (0–255) or ``"lab"`` (CIELAB, where equal distances look
            about equally different to a person, so one threshold suits dark and bright parts).
        linkage: ``"single"``, ``"mean"`` or ``"ward"`` (:func:`merge_similar`).
        ward_threshold: after that, merge neighbours whose Ward distance (``colour_space``
            units × √pixels) is under this (:func:`merge_similar` with ``linkage="ward"``);
            0 merges nothing.
        min_size: merge pieces under this many pixels (at the fit's size) into the nearest
            larger one; 1 merges nothing.
    """

    def __init__(
        self,
        superpixels: Any = None,
        connected: bool = False,
        colour_threshold: float = 0.0,
        min_size: int = 1,
        colour_space: str = "rgb",
        linkage: str = "single",
        ward_threshold: float = 0.0,
        regions: Any = None,
    ) -> None:
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        if colour_threshold < 0:
            raise ValueError(f"colour_threshold must be >= 0, got {colour_threshold}")
        if ward_threshold < 0:
            raise ValueError(f"ward_threshold must be >= 0, got {ward_threshold}")
        if colour_space not in COLOUR_SPACES:
            raise ValueError(f"colour_space must be one of {COLOUR_SPACES}, got {colour_space!r}")
        if linkage not in LINKAGES:
            raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
        self.superpixels = superpixels
        self.connected = connected
        self.colour_threshold = colour_threshold
        self.min_size = min_size
        self.colour_space = colour_space
        self.linkage = linkage
        self.ward_threshold = ward_threshold
        self.regions = regions

    @property
    def changes_nothing(self) -> bool:
        return (
            self.superpixels is None
            and self.regions is None
            and not self.connected
            and self.colour_threshold == 0
            and self.ward_threshold == 0
            and self.min_size == 1
        )

    def __call__(self, labels: np.ndarray, image: np.ndarray | Tensor) -> np.ndarray:
        """Segments of an ``(H, W)`` label map of ``image`` (``(3, H, W)`` float in [0, 1] or
        ``(H, W, 3)`` uint8), as ids 0..K−1 (the labels unchanged when there is nothing to do)."""
        if self.changes_nothing:
            return labels
        segments = np.asarray(labels)
        if self.superpixels is not None:
            segments = vote_in(segments, self.superpixels.fit(image).labels)
        if self.regions is not None:
            segments = cut_by(segments, self.regions.fit(image).labels)
        if self.connected:
            segments = relabel_connected(segments, 4)
        if self.colour_threshold > 0 or self.ward_threshold > 0:
            rgb = as_rgb(image)
            colours = rgb2lab(rgb) if self.colour_space == "lab" else rgb
            if self.colour_threshold > 0:
                segments = merge_similar(segments, colours, self.colour_threshold, self.linkage)
            if self.ward_threshold > 0:
                segments = merge_similar(segments, colours, self.ward_threshold, "ward")
        return merge_small(segments, self.min_size)

    def __repr__(self) -> str:
        return (
            f"Segments(superpixels={self.superpixels!r}, connected={self.connected}, "
            f"colour_threshold={self.colour_threshold}, min_size={self.min_size}, "
            f"colour_space={self.colour_space!r}, linkage={self.linkage!r}, "
            f"ward_threshold={self.ward_threshold}, regions={self.regions!r})"
        )
