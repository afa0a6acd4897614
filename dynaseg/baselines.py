"""Baseline methods of Table 1 (docs/method.md §2), behind the same interface as the DynaSeg fit.

* :class:`KMeansSegmenter` -- k-means on the pixels' RGB colours, k fixed or estimated per image
  by the silhouette phase of :mod:`dynaseg.stopping` (paper §3.3.2).
* :class:`FelzenszwalbSegmenter` -- Felzenszwalb & Huttenlocher's graph-based segmentation
  (scikit-image).

Both have ``fit(image, seed, on_iteration) -> SegmentationResult`` and the ``device`` and
``max_iter`` attributes that :class:`dynaseg.module.DynaSegModule` sets and reads, so the
experiment runner scores them exactly as it scores DynaSeg. Nothing is optimised: the result has
``iterations=0`` and an empty history. Plain PyTorch / NumPy: no Lightning or Hydra here.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from dynaseg.clustering import kmeans_batched
from dynaseg.engine import (
    HISTORY_KEYS,
    IterationCallback,
    OneAtATime,
    SegmentationResult,
    relabel_by_size,
    resolve_device,
    to_tensor,
)
from dynaseg.stopping import estimate_n_clusters

__all__ = ["FelzenszwalbSegmenter", "KMeansSegmenter"]

# Pixels assigned to their nearest centroid per block (bounds the N x k distance matrix).
_ASSIGN_BLOCK = 1 << 20


def _empty_history() -> dict[str, list[float]]:
    return {key: [] for key in HISTORY_KEYS}


def _to_uint8(image: np.ndarray | Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from either input form of :meth:`Segmenter.fit`."""
    if isinstance(image, Tensor):
        x = image.detach().float().cpu()
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"expected a 3×H×W image tensor, got {tuple(x.shape)}")
        return x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    return image


class KMeansSegmenter(OneAtATime):
    """k-means on pixel colours: the "k-means" row of Table 1.

    Centroids are fitted by k-means++ and Lloyd iterations on a seeded subsample of the pixels
    (:func:`dynaseg.clustering.kmeans_batched` with one k); every pixel then takes its nearest
    centroid.

    Args:
        k: the number of clusters; ``None`` estimates it per image as the silhouette-optimal k in
            [k_min, k_max] (:func:`dynaseg.stopping.estimate_n_clusters`).
        k_min, k_max: the range searched when ``k`` is None (authors' code: 3…26).
        n_samples: pixels subsampled (seeded) to fit the centroids and the silhouette.
        n_iter: Lloyd iterations.
        device: where the clustering runs (the framework sets it to the trainer's device).
    """

    max_iter = 0
    """No parameter updates (the framework reads it)."""

    def __init__(
        self,
        k: int | None = None,
        k_min: int = 3,
        k_max: int = 26,
        n_samples: int = 2000,
        n_iter: int = 50,
        device: str | torch.device = "cpu",
    ) -> None:
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1 or null (estimated), got {k}")
        if k_min < 2:
            raise ValueError(f"k_min must be >= 2, got {k_min}")
        if k_max < k_min:
            raise ValueError(f"k_min ({k_min}) must be <= k_max ({k_max})")
        largest = k if k is not None else k_max
        if n_samples <= largest:
            raise ValueError(f"n_samples ({n_samples}) must exceed k ({largest})")
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        self.k, self.k_min, self.k_max = k, k_min, k_max
        self.n_samples = n_samples
        self.n_iter = n_iter
        self.device = resolve_device(device)

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: IterationCallback | None = None,
    ) -> SegmentationResult:
        """Cluster one image's colours.

        Args:
            image: ``(H, W, 3)`` uint8 RGB array or ``(3, H, W)`` float tensor in [0, 1].
            seed: seeds the pixel subsample, the silhouette estimate and k-means++.
            on_iteration: accepted for interface compatibility; never called (no iterations).
        """
        start = time.perf_counter()
        device = torch.device(self.device)
        x = to_tensor(image).to(device)
        height, width = x.shape[1:]
        pixels = x.flatten(1).T.contiguous()  # (N, 3)
        opt_nc = None
        k = self.k
        if k is None:
            k = opt_nc = estimate_n_clusters(
                pixels, self.k_min, self.k_max, self.n_samples, seed, self.n_iter
            )
        generator = torch.Generator(device=device).manual_seed(seed)
        sample = pixels
        if pixels.shape[0] > self.n_samples:
            index = torch.randperm(pixels.shape[0], generator=generator, device=device)
            sample = pixels[index[: self.n_samples]]
        # k-means++ cannot place more distinct centres than there are distinct colours.
        runs_k = max(1, min(k, torch.unique(sample, dim=0).shape[0]))
        sample_labels = kmeans_batched(sample, [runs_k], generator, self.n_iter)[0]
        counts = torch.bincount(sample_labels, minlength=runs_k)
        sums = torch.zeros(runs_k, 3, device=device).index_add_(0, sample_labels, sample)
        centroids = (sums / counts.clamp_min(1)[:, None])[counts > 0]
        assigned = torch.cat(
            [torch.cdist(block, centroids).argmin(1) for block in pixels.split(_ASSIGN_BLOCK)]
        )
        labels = relabel_by_size(assigned.reshape(height, width).cpu().numpy())
        return SegmentationResult(
            labels=labels,
            iterations=0,
            stop_reason="kmeans",
            threshold=k,
            opt_nc=opt_nc,
            seconds=time.perf_counter() - start,
            history=_empty_history(),
        )

    def __repr__(self) -> str:
        return (
            f"KMeansSegmenter(k={self.k}, k_min={self.k_min}, k_max={self.k_max}, "
            f"n_samples={self.n_samples})"
        )


class FelzenszwalbSegmenter(OneAtATime):
    """Felzenszwalb & Huttenlocher (2004) graph-based segmentation: the "Graph-based" row.

    Runs :func:`skimage.segmentation.felzenszwalb` on the uint8 RGB image. The algorithm is
    deterministic, so ``seed`` has no effect; ``device`` is accepted for the framework (the work
    is done on the CPU).

    Args:
        scale: larger values give larger segments (observation scale ``k`` of the paper).
        sigma: width of the Gaussian pre-smoothing.
        min_size: smallest segment, in pixels (enforced by merging afterwards).
        device: ignored (CPU only); kept because the framework sets it.
    """

    max_iter = 0
    """No parameter updates (the framework reads it)."""

    def __init__(
        self,
        scale: float = 100.0,
        sigma: float = 0.5,
        min_size: int = 50,
        device: str | torch.device = "cpu",
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        self.scale, self.sigma, self.min_size = float(scale), float(sigma), int(min_size)
        self.device = resolve_device(device)

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: IterationCallback | None = None,
    ) -> SegmentationResult:
        """Segment one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB array or ``(3, H, W)`` float tensor in [0, 1].
            seed: unused (the algorithm is deterministic); accepted for the common interface.
            on_iteration: accepted for interface compatibility; never called.
        """
        from skimage.segmentation import felzenszwalb  # heavy import, only when used

        start = time.perf_counter()
        rgb = _to_uint8(image)
        segments = felzenszwalb(
            rgb, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=-1
        )
        labels = relabel_by_size(segments)
        return SegmentationResult(
            labels=labels,
            iterations=0,
            stop_reason="felzenszwalb",
            threshold=int(labels.max()) + 1,
            opt_nc=None,
            seconds=time.perf_counter() - start,
            history=_empty_history(),
        )

    def __repr__(self) -> str:
        return (
            f"FelzenszwalbSegmenter(scale={self.scale}, sigma={self.sigma}, "
            f"min_size={self.min_size})"
        )
