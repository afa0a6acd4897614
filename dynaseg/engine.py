"""One image's DynaSeg fit, top to bottom (paper §3, Algorithm 1; method.md §1).

A fresh, seeded network is fitted to a single image with no labels: every iteration takes the
arg-max of the response map as its own target, and the loss balances feature similarity against
spatial continuity with a weight μ that follows the current number of clusters q'. The fit stops
after T updates, or as soon as q' reaches the stopping threshold (opt_nC from the silhouette
phase, or a fixed number). Plain PyTorch: no Lightning or Hydra here.

The loop keeps everything on the device: q' is counted with a bincount, μ is a tensor, the history
is written into a preallocated tensor, and the response map stays in the convolution's layout.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynaseg.backbones import CNNBackbone
from dynaseg.images import image_to_tensor
from dynaseg.losses import continuity_loss, similarity_loss
from dynaseg.model import SegmentationNet
from dynaseg.stopping import SilhouetteStopping, ThresholdStopping
from dynaseg.weighting import FixedWeighting, FSFWeighting, SCFWeighting

Weighting = FixedWeighting | FSFWeighting | SCFWeighting
Stopping = ThresholdStopping | SilhouetteStopping
IterationCallback = Callable[[int, int, float], None]
HISTORY_KEYS = ("q", "mu", "loss_sim", "loss_con")


def image_seed(seed: int, image_id: str) -> int:
    """A per-image seed from the global seed and the image's id.

    Results then depend neither on the order of the images nor on how they are split over
    workers or processes.

    >>> image_seed(0, "3096") == image_seed(0, "3096") != image_seed(1, "3096")
    True
    """
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels to 0…K−1, the largest segment first (ties: the smaller old id first).

    >>> relabel_by_size(np.array([[7, 7, 2], [7, 9, 9]])).tolist()
    [[0, 0, 2], [0, 1, 1]]
    """
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((values, -counts))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].reshape(labels.shape).astype(np.int32)


@dataclass
class SegmentationResult:
    """What one image's fit produced, and how it got there."""

    labels: np.ndarray
    """``(H, W)`` int32 labels 0…K−1, largest segment first."""
    iterations: int
    """Parameter updates made (≤ T)."""
    stop_reason: str
    """``"threshold"`` (q' reached the threshold) or ``"max_iter"`` (T updates done)."""
    threshold: int
    """The q' threshold in force."""
    opt_nc: int | None
    """The silhouette estimate of the number of clusters (None with a fixed threshold)."""
    seconds: float
    history: dict[str, list[float]] = field(repr=False)
    """Per forward pass: q', μ and the two loss terms (the last pass makes no update)."""
    snapshots: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    """Label maps at the iterations asked for with ``fit(snapshots=…)`` that the fit reached."""

    @property
    def n_clusters(self) -> int:
        """Distinct labels in the final map."""
        return int(self.labels.max()) + 1

    def summary(self) -> dict[str, Any]:
        """The facts a user asks about, JSON-ready (no label map, no history)."""
        return {
            "n_clusters": self.n_clusters,
            "iterations": self.iterations,
            "stop_reason": self.stop_reason,
            "threshold": self.threshold,
            "opt_nc": self.opt_nc,
            "seconds": round(self.seconds, 3),
        }


def to_tensor(image: np.ndarray | Tensor) -> Tensor:
    """``(H, W, 3)`` uint8 RGB → ``(3, H, W)`` float in [0, 1]; a tensor passes through as float."""
    return image.float() if isinstance(image, Tensor) else image_to_tensor(image)


def forward_losses(
    net: nn.Module, x: Tensor, n_clusters: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward pass: the arg-max labels, q' and both loss terms (what ``compile`` fuses).

    q' is counted on the device (a scatter into q flags, no host copy and no ``bincount``,
    which would synchronise a GPU to size its output).
    """
    _, response = net(x)
    target = response.argmax(1)
    present = torch.zeros(n_clusters, dtype=torch.bool, device=x.device)
    n_labels = present.index_fill(0, target.flatten(), True).sum()
    return target, n_labels, similarity_loss(response, target), continuity_loss(response)


class Segmenter:
    """Segments images one at a time with DynaSeg; configure once, call :meth:`fit` per image.

    Args:
        backbone: factory of a fresh feature extractor (called once per image).
        weighting: μ as a function of q' (``FSFWeighting``, ``SCFWeighting``, ``FixedWeighting``).
        stopping: the stopping threshold (``SilhouetteStopping`` or ``ThresholdStopping``).
        n_clusters: q, the channels of the response map (the most clusters possible).
        max_iter: T, the most parameter updates.
        optimizer: factory ``params -> Optimizer``; default SGD(lr 0.1, momentum 0.9, wd 1e-4).
        device: where the fit runs.
        channels_last: NHWC activations: faster convolutions, but PyTorch's CPU BatchNorm loses
            precision in this layout (errors near 1e-2), so it is off by default; with
            ``compile`` the fused BatchNorm is exact in either layout.
        compile: fuse each iteration's forward and losses with ``torch.compile`` (compiled once
            per image size and reused across images; the first call pays the compilation).
        sync_every: read q' on the host every this many iterations (None: every iteration on
            CPU, where it is free, every 25 on GPU, so the device never waits for the host).
            The labels of the exact iteration at which the stopping rule fired are returned.
        precision: ``"bf16"`` runs the forward pass under bfloat16 autocast (GPUs, and CPUs
            with AVX-512 BF16); the losses and the optimiser stay in float32.
    """

    def __init__(
        self,
        backbone: Callable[[], nn.Module] = CNNBackbone,
        weighting: Weighting | None = None,
        stopping: Stopping | None = None,
        n_clusters: int = 100,
        max_iter: int = 1000,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        compile: bool = False,
        sync_every: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter (T) must be >= 1, got {max_iter}")
        if n_clusters < 2:
            raise ValueError(f"n_clusters (q) must be >= 2, got {n_clusters}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.backbone = backbone
        self.weighting = weighting if weighting is not None else FSFWeighting()
        self.stopping = stopping if stopping is not None else SilhouetteStopping()
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.optimizer = optimizer or partial(
            torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4
        )
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.sync_every = sync_every
        self.precision = precision
        self.forward_losses = torch.compile(forward_losses) if compile else forward_losses

    def build_network(self, seed: int) -> SegmentationNet:
        """A freshly initialised network, seeded without touching the global RNG state."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            net = SegmentationNet(self.backbone(), self.n_clusters)
        net = net.to(self.device).train()
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: IterationCallback | None = None,
        snapshots: Collection[int] = (),
    ) -> SegmentationResult:
        """Fit a fresh network to one image and return its segmentation.

        Args:
            image: ``(H, W, 3)`` uint8 RGB array or ``(3, H, W)`` float tensor in [0, 1].
            seed: seeds the network's initialisation and the silhouette subsample.
            on_iteration: called for every forward pass with (iteration, q', μ), e.g. for a
                progress bar (in bursts of ``sync_every`` on a GPU).
            snapshots: iterations whose label maps to keep as well (0 = before any update), so
                that one fit shows what every smaller T would have given; each one read
                synchronises a GPU.

        Raises:
            FloatingPointError: the loss became non-finite (the message names the iteration).
        """
        start = time.perf_counter()
        x = to_tensor(image).to(self.device)[None]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.build_network(seed)
        optimizer = self.optimizer(net.parameter_groups())
        threshold, opt_nc = self.stopping.resolve(x[0], lambda: net.backbone(x)[0], seed)

        every = self.sync_every or (1 if self.device.type == "cpu" else 25)
        history = torch.zeros(self.max_iter + 1, len(HISTORY_KEYS), device=self.device)
        recent = torch.zeros((every, *x.shape[2:]), dtype=torch.int16, device=self.device)
        stop_reason, checked = "max_iter", 0
        kept: dict[int, Tensor] = {}
        for iteration in range(self.max_iter + 1):
            with self.autocast():
                target, n_labels, loss_sim, loss_con = self.forward_losses(net, x, self.n_clusters)
            mu = self.weighting(n_labels)
            history[iteration] = torch.stack(
                [n_labels.float(), mu, loss_sim.detach(), loss_con.detach()]
            )
            recent[iteration % every] = target[0]
            if iteration in snapshots:
                kept[iteration] = target[0].cpu()
            if (iteration + 1) % every == 0 or iteration == self.max_iter:
                fired = self._check(history, checked, iteration, threshold, on_iteration)
                if fired is not None:
                    iteration, stop_reason = fired, "threshold"
                    break
                checked = iteration + 1
            if iteration == self.max_iter:
                break
            optimizer.zero_grad(set_to_none=True)
            (loss_sim + mu * loss_con).backward()
            optimizer.step()
        labels = relabel_by_size(recent[iteration % every].cpu().numpy())
        recorded = history[: iteration + 1].cpu().T.tolist()
        return SegmentationResult(
            labels=labels,
            iterations=iteration,
            stop_reason=stop_reason,
            threshold=threshold,
            opt_nc=opt_nc,
            seconds=time.perf_counter() - start,
            history=dict(zip(HISTORY_KEYS, recorded, strict=True)),
            snapshots={t: relabel_by_size(kept[t].numpy()) for t in sorted(kept) if t <= iteration},
        )

    def autocast(self) -> torch.autocast:
        """The forward pass's autocast context (a no-op in float32)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    @staticmethod
    def _check(
        history: Tensor,
        first: int,
        last: int,
        threshold: int,
        on_iteration: IterationCallback | None,
    ) -> int | None:
        """Read iterations ``first…last`` on the host (one synchronisation); return the first at
        which q' ≤ threshold, if any. Raises on the first non-finite loss."""
        for offset, (q, mu, loss_sim, loss_con) in enumerate(history[first : last + 1].tolist()):
            iteration = first + offset
            if not math.isfinite(loss_sim + mu * loss_con):
                raise FloatingPointError(f"non-finite loss at iteration {iteration}")
            if on_iteration is not None:
                on_iteration(iteration, int(q), mu)
            if q <= threshold:
                return iteration
        return None
