"""When to stop an image's fit: as soon as q' (distinct labels) falls to a threshold.

The threshold is either fixed (Kim et al.'s ``minLabels = 3``; Table 5's "Thr 3") or estimated
per image by the silhouette phase (paper §3.3.2): before the first update, cluster the image's
pixels for every k in [k_min, k_max] and take the k with the best silhouette score as opt_nC. This
guards against the fit collapsing to one or two clusters on images with more structure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from dynaseg.clustering import kmeans_batched, silhouette_scores


class ThresholdStopping:
    """Stop when q' ≤ ``threshold``; ``threshold=0`` never stops early (run all T iterations)."""

    def __init__(self, threshold: int = 3) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold

    def resolve(
        self, image: Tensor, features: Callable[[], Tensor], seed: int
    ) -> tuple[int, int | None]:
        """Return the threshold and no estimate (the threshold does not depend on the image)."""
        return self.threshold, None

    def __repr__(self) -> str:
        return f"ThresholdStopping(threshold={self.threshold})"


class SilhouetteStopping:
    """Stop when q' ≤ opt_nC, the silhouette-optimal number of clusters of this image.

    Args:
        k_min: smallest k tried (the authors' code: 3).
        k_max: largest k tried (the authors' code: 26).
        n_samples: pixels subsampled (seeded) for k-means and the O(n²) silhouette.
        features: cluster the image's colours, or the initial network's features.
        n_iter: Lloyd iterations per k-means run.
    """

    def __init__(
        self,
        k_min: int = 3,
        k_max: int = 26,
        n_samples: int = 2000,
        features: Literal["color", "network"] = "color",
        n_iter: int = 50,
    ) -> None:
        if k_min < 2:
            raise ValueError(f"k_min must be >= 2, got {k_min}")
        if k_max < k_min:
            raise ValueError(f"k_min ({k_min}) must be <= k_max ({k_max})")
        if n_samples <= k_max:
            raise ValueError(f"n_samples ({n_samples}) must exceed k_max ({k_max})")
        if features not in ("color", "network"):
            raise ValueError(f"features must be 'color' or 'network', got {features!r}")
        self.k_min, self.k_max = k_min, k_max
        self.n_samples = n_samples
        self.features = features
        self.n_iter = n_iter

    def resolve(
        self, image: Tensor, features: Callable[[], Tensor], seed: int
    ) -> tuple[int, int | None]:
        """Estimate opt_nC on this image; it is both the threshold and the reported estimate.

        Args:
            image: ``(3, H, W)`` input image.
            features: computes the ``(p, H, W)`` features of the freshly initialised network
                (called only when they are clustered).
            seed: seeds the pixel subsample and k-means.
        """
        if self.features == "color":
            source = image
        else:
            with torch.no_grad():
                source = features()
        opt_nc = estimate_n_clusters(
            source.detach().flatten(1).T, self.k_min, self.k_max, self.n_samples, seed, self.n_iter
        )
        return opt_nc, opt_nc

    def __repr__(self) -> str:
        return (
            f"SilhouetteStopping(k_min={self.k_min}, k_max={self.k_max}, "
            f"n_samples={self.n_samples}, features={self.features!r})"
        )


def estimate_n_clusters(
    pixels: Tensor, k_min: int, k_max: int, n_samples: int, seed: int, n_iter: int = 50
) -> int:
    """The k in [k_min, k_max] whose k-means clustering has the highest silhouette score.

    Args:
        pixels: ``(N, d)`` per-pixel features.
        k_min, k_max: the range of k (clipped to the number of distinct sampled points).
        n_samples: size of the seeded random subsample (all pixels when there are fewer).
        seed: seeds the subsample and the k-means++ draws.
        n_iter: Lloyd iterations.

    Returns:
        opt_nC; the smallest k on ties.
    """
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    n = pixels.shape[0]
    if n > n_samples:
        index = torch.randperm(n, generator=generator, device=pixels.device)[:n_samples]
        pixels = pixels[index]
    points = pixels.float()
    distinct = torch.unique(points, dim=0).shape[0]
    top = min(k_max, distinct)
    if top < k_min:
        return max(top, 1)
    ks = list(range(k_min, top + 1))
    labels = kmeans_batched(points, ks, generator, n_iter)
    scores = silhouette_scores(torch.cdist(points, points), labels, top)
    return ks[int(scores.argmax())]


class ConvergenceRule:
    """Stop once the labels have settled: the fraction of pixels whose label changed since the
    previous iteration stayed below ``tolerance`` for ``window`` consecutive iterations.

    The q' threshold alone rarely fires on natural images (opt_nC sits below the q' at which the
    fit settles), so without this rule a fit runs all T iterations long after its labels stopped
    moving. It combines with the threshold: the fit stops at whichever fires first.

    Args:
        tolerance: ε, the changed fraction below which an iteration counts as still.
        window: w, the still iterations in a row that end the fit.
    """

    def __init__(self, tolerance: float = 0.005, window: int = 10) -> None:
        if not 0 < tolerance <= 1:
            raise ValueError(f"tolerance must be in (0, 1], got {tolerance}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.tolerance = tolerance
        self.window = window

    def streak(self, still: int, changed: float) -> int:
        """The run of still iterations after one more iteration with this changed fraction."""
        return still + 1 if changed < self.tolerance else 0

    def first_stop(self, changed: list[float]) -> int | None:
        """The first iteration at which the rule fires on this history, if any.

        >>> ConvergenceRule(0.1, 2).first_stop([1.0, 0.5, 0.05, 0.2, 0.01, 0.0, 0.0])
        5
        """
        still = 0
        for iteration, value in enumerate(changed):
            still = self.streak(still, value)
            if still >= self.window:
                return iteration
        return None

    def __repr__(self) -> str:
        return f"ConvergenceRule(tolerance={self.tolerance}, window={self.window})"
