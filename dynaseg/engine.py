"""One image's DynaSeg fit, top to bottom (paper §3.1, Fig. 1; docs/method.md §1).

A fresh, seeded network is fitted to a single image with no labels: every iteration takes the
arg-max of the response map as its own target, and the loss balances feature similarity against
spatial continuity with a weight μ that follows the current number of clusters q'. The fit stops
after T updates, as soon as q' reaches the stopping threshold (opt_nC from the silhouette
phase, or a fixed number), or once the labels have stopped changing (the convergence rule),
whichever comes first. Plain PyTorch: no Lightning or Hydra here.

There is one loop, over a batch of B ≥ 1 same-size images, each with its own network, optimiser
state, μ, q' and stopping (B = 1 is the ordinary case; B > 1 stacks the networks, see
:mod:`dynaseg.batched`). The loop keeps everything on the device: q' and the changed-pixel
fraction are counted there, μ is a tensor, the history is written into a preallocated tensor, and
the host reads it in bursts (``sync_every``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynaseg.backbones import CNNBackbone
from dynaseg.batched import Functional, StackedNetworks
from dynaseg.images import image_to_tensor
from dynaseg.losses import UNMARKED, Strokes, continuity_loss, scribble_loss, similarity_loss
from dynaseg.model import SegmentationNet
from dynaseg.stopping import ConvergenceRule, SilhouetteStopping, ThresholdStopping
from dynaseg.weighting import FixedWeighting, FSFWeighting, SCFWeighting

Weighting = FixedWeighting | FSFWeighting | SCFWeighting
Stopping = ThresholdStopping | SilhouetteStopping
IterationCallback = Callable[[int, int, float], None]
"""``(iteration, q', μ)`` of one image's forward pass."""
BatchCallback = Callable[[int, int, int, float], None]
"""``(member, iteration, q', μ)``: the same for member ``member`` of a batch."""
HISTORY_KEYS = ("q", "mu", "loss_sim", "loss_con", "changed")
"""Per forward pass: q', μ, the two loss terms, and the fraction of pixels whose label differs
from the previous pass's (1 at iteration 0, where there is none)."""
STOP_REASONS = ("threshold", "converged", "max_iter", "model")
log = logging.getLogger(__name__)


def image_seed(seed: int, image_id: str) -> int:
    """A per-image seed from the global seed and the image's id.

    Results then depend neither on the order of the images nor on how they are split over
    workers or processes.

    >>> image_seed(0, "3096") == image_seed(0, "3096") != image_seed(1, "3096")
    True
    """
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device; ``"auto"`` is the first GPU when there is one, else the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scribble_classes(scribble: np.ndarray | Tensor) -> list[int]:
    """The classes a scribble marks (every value but :data:`UNMARKED`), sorted.

    >>> scribble_classes(np.array([[255, 3], [0, 3]]))
    [0, 3]
    """
    values = np.unique(np.asarray(scribble.cpu() if isinstance(scribble, Tensor) else scribble))
    return [int(v) for v in values if v != UNMARKED]


class ScribbleError(ValueError):
    """A scribble that cannot guide this fit (no marked pixel, a class id not below q)."""


@dataclass
class FitState:
    """A network and its optimiser state carried from one fit into the next (warm starts): a
    fit given one starts from them and leaves its own in their place."""

    net: SegmentationNet | None = None
    optimizer: dict[str, Any] | None = None


def classes_apart(labels: Tensor, scribble: Tensor) -> bool:
    """Whether each scribble class lies mostly on a label of its own: a scribbled fit has not
    reached its threshold while two of the classes the user told apart share one label.

    >>> strokes = torch.tensor([[0, 255, 1]])
    >>> classes_apart(torch.tensor([[4, 4, 5]]), strokes)
    True
    >>> classes_apart(torch.tensor([[4, 5, 4]]), strokes)
    False
    """
    marked = scribble != UNMARKED
    labels, classes = labels[marked].long(), scribble[marked]
    modes = [int(torch.mode(labels[classes == c]).values) for c in torch.unique(classes)]
    return len(set(modes)) == len(modes)


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
    """``(H, W)`` int32 labels 0…K−1, largest segment first (or the network's cluster ids, where
    they must mean the same from one image to the next: a saved model, warm starts)."""
    iterations: int
    """Parameter updates made (≤ T)."""
    stop_reason: str
    """``"threshold"`` (q' reached the threshold), ``"converged"`` (the labels settled) or
    ``"max_iter"`` (T updates done)."""
    threshold: int
    """The q' threshold in force."""
    opt_nc: int | None
    """The silhouette estimate of the number of clusters (None with a fixed threshold)."""
    seconds: float
    """Wall time from the start of the fit until this image stopped (in a batch, the batch's
    start: a member that stops early reports less than the others)."""
    history: dict[str, list[float]] = field(repr=False)
    """Per forward pass, :data:`HISTORY_KEYS` (the last pass makes no update)."""
    snapshots: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    """Label maps at the iterations asked for with ``fit(snapshots=…)`` that the fit reached."""

    @property
    def n_clusters(self) -> int:
        """Distinct labels in the final map."""
        return int(np.unique(self.labels).size)

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


def count_labels(target: Tensor, n_clusters: int) -> Tensor:
    """q', the number of distinct labels in ``target`` (ids < ``n_clusters``), as a 0-d tensor.

    Counted on the device: a scatter into q flags, no host copy and no ``bincount``, which would
    synchronise a GPU to size its output.

    >>> int(count_labels(torch.tensor([[0, 2, 2], [2, 0, 0]]), 4))
    2
    """
    present = torch.zeros(n_clusters, dtype=torch.bool, device=target.device)
    return present.index_fill(0, target.flatten(), True).sum()


def forward_losses(
    net: nn.Module,
    x: Tensor,
    n_clusters: int,
    strokes: Strokes | None = None,
    scribble_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward pass: the arg-max labels, q' and both loss terms (what ``compile`` fuses).

    With a scribble, the similarity term is Kim et al.'s (2020) data term: the similarity loss
    over the unmarked pixels plus ``scribble_weight`` times the cross-entropy against the
    scribbled classes.
    """
    _, response = net(x)
    target = response.argmax(1)
    n_labels = count_labels(target, n_clusters)
    loss_sim = similarity_loss(response, target, strokes)
    if strokes is not None:
        loss_sim = loss_sim + scribble_weight * scribble_loss(response, strokes)
    return target, n_labels, loss_sim, continuity_loss(response)


def changed_fraction(target: Tensor, previous: Tensor) -> Tensor:
    """Per batch member, the fraction of pixels whose label differs between two passes.

    >>> changed_fraction(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 0]]]))
    tensor([0.2500])
    """
    return (target != previous).flatten(1).float().mean(1)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 convolutions natively (a CUDA GPU that supports
    them; a CPU with AVX-512 BF16 or AMX through oneDNN), where emulated bf16 would be slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def _functional_losses(
    template: nn.Module, state: dict[str, Tensor], x: Tensor, n_clusters: int, *strokes: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`forward_losses` of ``template`` run on another network's parameters and buffers
    (what ``compile`` traces: the tensors are inputs, so each image's network reuses it)."""
    return forward_losses(Functional(template, state), x, n_clusters, *strokes)


def structure_key(net: nn.Module) -> int:
    """Equal for networks that one compiled forward pass can serve."""
    return hash(
        (
            str(next(net.parameters()).device),
            *((n, tuple(p.shape)) for n, p in net.state_dict().items()),
        )
    )


class _CompiledOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` with one warning where it cannot compile
    (no C++ compiler, an unsupported platform): ``compile`` is a speed option, never a failure.

    The graph takes the network's tensors as inputs (see :func:`_functional_losses`), so every
    image of a size already seen reuses it; each new size compiles once (the forward pass
    specialises on the image size, so dynamic shapes do not apply).
    """

    warned = False

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.eager = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                self.compiled = None
                if not _CompiledOrEager.warned:
                    _CompiledOrEager.warned = True
                    cause = str(error.inner_exception).strip().splitlines()[0]
                    log.warning("torch.compile is unavailable (%s); running eager", cause)
        return self.eager(*args)


class OneAtATime:
    """``fit_many`` for a method that fits its images one by one (nothing to batch, or each
    image starting from the one before), answering as :meth:`Segmenter.fit_many` does: in
    order, a non-finite loss failing its image only. Subclasses define ``fit``."""

    def fit_many(
        self,
        images: Sequence[np.ndarray | Tensor],
        seeds: Sequence[int],
        on_iteration: BatchCallback | None = None,
        snapshots: Collection[int] = (),
        scribbles: Sequence[np.ndarray | Tensor] | None = None,
    ) -> list[SegmentationResult | FloatingPointError]:
        strokes = list(scribbles) if scribbles is not None else [None] * len(images)
        results: list[SegmentationResult | FloatingPointError] = []
        for image, seed, scribble in zip(images, seeds, strokes, strict=True):
            extra = {} if scribble is None else {"scribble": scribble}
            try:
                results.append(self.fit(image, seed, **extra))
            except FloatingPointError as error:
                results.append(error)
        return results


@dataclass
class _Members:
    """The host's view of a batch's members while the fit runs."""

    thresholds: list[int]
    active: list[bool]
    stop_at: list[int]
    reasons: list[str]
    seconds: list[float]
    still: list[int]
    labels: list[Tensor | None]
    errors: dict[int, FloatingPointError]

    @classmethod
    def start(cls, thresholds: list[int], max_iter: int) -> _Members:
        n = len(thresholds)
        return cls(
            thresholds,
            [True] * n,
            [max_iter] * n,
            ["max_iter"] * n,
            [0.0] * n,
            [0] * n,
            [None] * n,
            {},
        )


class Segmenter:
    """Segments images with DynaSeg; configure once, call :meth:`fit` per image (or
    :meth:`fit_many` for a batch of same-size images fitted together).

    Args:
        backbone: factory of a fresh feature extractor (called once per image).
        weighting: μ as a function of q' (``FSFWeighting``, ``SCFWeighting``, ``FixedWeighting``).
        stopping: the stopping threshold (``SilhouetteStopping`` or ``ThresholdStopping``).
        convergence: also stop once the labels have settled (None: never; the paper's loop).
            ``ThresholdStopping(0)`` means "no early stop of any kind" and switches it off.
        n_clusters: q, the channels of the response map (the most clusters possible).
        max_iter: T, the most parameter updates.
        optimizer: factory ``params -> Optimizer``; default SGD(lr 0.1, momentum 0.9, wd 1e-4).
        device: where the fit runs (``"auto"``: a GPU when there is one).
        channels_last: NHWC activations: faster convolutions, but PyTorch's CPU BatchNorm loses
            precision in this layout (errors near 1e-2), so it is off by default; with
            ``compile`` the fused BatchNorm is exact in either layout.
        compile: fuse each iteration's forward and losses with ``torch.compile``: compiled once
            per image size and reused by every image of that size. Without a working compiler
            it runs eager, with one warning.
        sync_every: read q' on the host every this many iterations (None: every iteration on
            CPU, where it is free, every 25 on GPU, so the device never waits for the host).
            The labels of the exact iteration at which a stopping rule fired are returned.
        precision: ``"bf16"`` runs the forward pass under bfloat16 autocast (GPUs, and CPUs
            with AVX-512 BF16); the losses and the optimiser stay in float32. ``"auto"``: bf16
            where the device computes it natively (:func:`native_bf16`), else ``"fp32"``.
        scribble_weight: weight of the scribble term in a scribbled fit (``fit(scribble=…)``).
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
        convergence: ConvergenceRule | None = None,
        scribble_weight: float = 1.0,
    ) -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter (T) must be >= 1, got {max_iter}")
        if n_clusters < 2:
            raise ValueError(f"n_clusters (q) must be >= 2, got {n_clusters}")
        if precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        if not scribble_weight > 0:
            raise ValueError(f"scribble_weight must be > 0, got {scribble_weight}")
        self.backbone = backbone
        self.weighting = weighting if weighting is not None else FSFWeighting()
        self.stopping = stopping if stopping is not None else SilhouetteStopping()
        self.convergence = convergence
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.optimizer = optimizer or partial(
            torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4
        )
        self.device = resolve_device(device)
        self.channels_last = channels_last
        self.sync_every = sync_every
        self.precision = precision
        self.compile = compile
        self.scribble_weight = scribble_weight
        self._compiled: dict[int, Callable[..., Any]] = {}
        """Per network structure, its compiled forward pass (one image, or a stack)."""

    @property
    def never_stops_early(self) -> bool:
        """``ThresholdStopping(0)``: the switch for "no early stop of any kind"."""
        return isinstance(self.stopping, ThresholdStopping) and self.stopping.threshold == 0

    @property
    def convergence_rule(self) -> ConvergenceRule | None:
        """The convergence rule in force (none under ``ThresholdStopping(0)``)."""
        return None if self.never_stops_early else self.convergence

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
        scribble: np.ndarray | Tensor | None = None,
        state: FitState | None = None,
        renumber: bool = True,
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
            scribble: ``(H, W)`` integer classes < q marking some pixels, :data:`UNMARKED`
                (255) elsewhere. The fit then honours them (:func:`forward_losses`) and its
                q' threshold is the number of scribbled classes, as in Kim et al. (2020).
            state: start from this network and optimiser state instead of a fresh network, and
                leave the fit's own in it (warm starts, :mod:`dynaseg.reuse`).
            renumber: renumber the labels by segment size (False: keep the cluster ids, which
                then mean the same from one fit to the next).

        Raises:
            FloatingPointError: the loss became non-finite (the message names the iteration).
        """
        callback = None if on_iteration is None else lambda _, *rest: on_iteration(*rest)
        scribbles = None if scribble is None else [scribble]
        (result,) = self.fit_many([image], [seed], callback, snapshots, scribbles, state, renumber)
        if isinstance(result, FloatingPointError):
            raise result
        return result

    def fit_many(
        self,
        images: Sequence[np.ndarray | Tensor],
        seeds: Sequence[int],
        on_iteration: BatchCallback | None = None,
        snapshots: Collection[int] = (),
        scribbles: Sequence[np.ndarray | Tensor] | None = None,
        state: FitState | None = None,
        renumber: bool = True,
    ) -> list[SegmentationResult | FloatingPointError]:
        """Fit one fresh network per image, all together: the one DynaSeg loop.

        Each image gets the network ``build_network(seed)`` gives it, its own optimiser state,
        μ, q' and stopping; one that stops keeps the labels of that exact iteration while the
        others go on. Arguments as :meth:`fit`, one seed per image; ``on_iteration`` also gets
        the member's index. ``scribbles`` (one per image) and ``state`` are taken for one image
        at a time.

        Returns:
            One result per image, in order; an image whose loss became non-finite gets the
            ``FloatingPointError`` naming the iteration instead, and the others are unaffected.
        """
        if len(images) != len(seeds) or not images:
            raise ValueError(f"need one seed per image, got {len(images)} and {len(seeds)}")
        start = time.perf_counter()
        tensors = [to_tensor(image) for image in images]
        if len({tuple(x.shape) for x in tensors}) != 1:
            raise ValueError("all images of a batch must have the same size")
        xs = torch.stack(tensors).to(self.device)
        if self.channels_last:
            xs = xs.contiguous(memory_format=torch.channels_last)
        if state is not None and len(images) != 1:
            raise ValueError("a warm-started fit takes one image at a time")
        if state is not None and state.net is not None:
            nets = [state.net.to(self.device).train()]
        else:
            nets = [self.build_network(seed) for seed in seeds]
        strokes, apart = None, None
        if scribbles is not None:
            scribble, classes = self._scribble(scribbles, xs)
            strokes = Strokes.of(scribble)
            apart = partial(classes_apart, scribble=scribble[0])
            resolved = [(0 if self.never_stops_early else len(classes), None)]
        else:
            resolved = [
                self.stopping.resolve(x, lambda net=net, x=x: net.backbone(x[None])[0], seed)
                for net, x, seed in zip(nets, xs, seeds, strict=True)
            ]
        members = _Members.start([threshold for threshold, _ in resolved], self.max_iter)
        step, groups = self._step(nets, strokes)
        optimizer = self.optimizer(groups)
        if state is not None and state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
        convergence = self.convergence_rule

        batch, every = len(nets), self.host_reads_every
        history = torch.zeros(self.max_iter + 1, batch, len(HISTORY_KEYS), device=self.device)
        recent = torch.zeros((every, batch, *xs.shape[2:]), dtype=torch.int16, device=self.device)
        active = torch.ones(batch, dtype=torch.bool, device=self.device)
        kept: list[dict[int, Tensor]] = [{} for _ in nets]
        checked = 0
        for iteration in range(self.max_iter + 1):
            with self.autocast():
                target, n_labels, loss_sim, loss_con = step(xs)
            mu = torch.broadcast_to(self.weighting(n_labels), n_labels.shape)
            target = target.to(torch.int16)
            if iteration == 0:
                changed = torch.ones(batch, device=self.device)
            else:
                changed = changed_fraction(target, recent[(iteration - 1) % every])
            history[iteration] = torch.stack(
                [n_labels.float(), mu, loss_sim.detach(), loss_con.detach(), changed], 1
            )
            recent[iteration % every] = target
            if iteration in snapshots:
                for b in range(batch):
                    if members.active[b]:
                        kept[b][iteration] = target[b].cpu()
            if (iteration + 1) % every == 0 or iteration == self.max_iter:
                self._check(
                    history,
                    recent,
                    checked,
                    iteration,
                    members,
                    convergence,
                    start,
                    on_iteration,
                    apart,
                )
                checked = iteration + 1
                if not any(members.active):
                    break
                if not all(members.active):
                    active = torch.tensor(members.active, device=self.device)
            optimizer.zero_grad(set_to_none=True)
            losses = loss_sim + mu * loss_con
            torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
            optimizer.step()
        if state is not None:
            state.net, state.optimizer = nets[0], optimizer.state_dict()
        number = relabel_by_size if renumber else lambda labels: labels.astype(np.int32)
        results: list[SegmentationResult | FloatingPointError] = []
        for b, (threshold, opt_nc) in enumerate(resolved):
            if b in members.errors:
                results.append(members.errors[b])
                continue
            last = members.stop_at[b]
            rows = history[: last + 1, b].cpu().T.tolist()
            results.append(
                SegmentationResult(
                    labels=number(members.labels[b].numpy()),
                    iterations=last,
                    stop_reason=members.reasons[b],
                    threshold=threshold,
                    opt_nc=opt_nc,
                    seconds=members.seconds[b],
                    history=dict(zip(HISTORY_KEYS, rows, strict=True)),
                    snapshots={t: number(kept[b][t].numpy()) for t in sorted(kept[b]) if t <= last},
                )
            )
        return results

    @property
    def host_reads_every(self) -> int:
        """Iterations between host reads of the fit's numbers: ``sync_every``, or every
        iteration on a CPU (free there) and every 25 on a GPU (so that it never waits)."""
        return self.sync_every or (1 if self.device.type == "cpu" else 25)

    def _scribble(
        self, scribbles: Sequence[np.ndarray | Tensor], xs: Tensor
    ) -> tuple[Tensor, list[int]]:
        """One image's scribble as a ``(1, H, W)`` int64 tensor on the device, and its classes.

        Raises:
            ScribbleError: no marked pixel, or a class id that is not below q.
        """
        if len(scribbles) != 1 or xs.shape[0] != 1:
            raise ValueError("a scribbled fit takes one image at a time")
        scribble = torch.as_tensor(np.asarray(scribbles[0])).to(self.device, torch.int64)
        if tuple(scribble.shape) != tuple(xs.shape[2:]):
            raise ValueError(f"scribble {tuple(scribble.shape)} and image differ in size")
        classes = scribble_classes(scribble)
        if not classes:
            raise ScribbleError(f"the scribble marks no pixel (every value is {UNMARKED})")
        if max(classes) >= self.n_clusters or min(classes) < 0:
            bad = max(classes) if max(classes) >= self.n_clusters else min(classes)
            raise ScribbleError(
                f"scribble class {bad} is not in 0..{self.n_clusters - 1} (q = "
                f"{self.n_clusters}; {UNMARKED} marks no class)"
            )
        return scribble[None], classes

    def _step(
        self, nets: list[SegmentationNet], strokes: Strokes | None = None
    ) -> tuple[Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]], list[dict]]:
        """The batch's forward pass ``xs -> (target, q', L_sim, L_con)``, each with a leading
        batch axis, and its optimiser parameter groups: the network itself for one image, the
        networks stacked and vectorised for several."""
        if len(nets) == 1:
            net = nets[0]
            extra = () if strokes is None else (strokes, self.scribble_weight)
            forward = partial(forward_losses, net)
            if self.compile:
                # Compiled over the network's tensors with a template that is built once, so
                # that a new network (every image) is no new graph: one graph per image size.
                key = structure_key(net)
                if key not in self._compiled:
                    self._compiled[key] = _CompiledOrEager(
                        partial(_functional_losses, self.build_network(0))
                    )
                state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
                forward = partial(self._compiled[key], state)

            def single(xs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
                target, n_labels, loss_sim, loss_con = forward(xs, self.n_clusters, *extra)
                return target, n_labels[None], loss_sim[None], loss_con[None]

            return single, net.parameter_groups()
        stacked = StackedNetworks(nets)
        if not self.compile:
            return partial(stacked.call, stacked.vectorised(forward_losses, self.n_clusters)), (
                stacked.parameter_groups()
            )
        if stacked.structure not in self._compiled:
            forward = stacked.vectorised(forward_losses, self.n_clusters)
            self._compiled[stacked.structure] = _CompiledOrEager(forward)
        return partial(stacked.call, self._compiled[stacked.structure]), stacked.parameter_groups()

    @property
    def resolved_precision(self) -> str:
        """``"fp32"`` or ``"bf16"``: the precision in force on this device."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if native_bf16(self.device) else "fp32"

    def autocast(self) -> torch.autocast:
        """The forward pass's autocast context (a no-op in float32)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.resolved_precision == "bf16"
        )

    @staticmethod
    def _check(
        history: Tensor,
        recent: Tensor,
        first: int,
        last: int,
        members: _Members,
        convergence: ConvergenceRule | None,
        start: float,
        on_iteration: BatchCallback | None,
        apart: Callable[[Tensor], bool] | None = None,
    ) -> None:
        """Read iterations ``first…last`` on the host (one synchronisation) and stop every
        member at the first of them where a rule fires (threshold, then convergence, then T),
        keeping that iteration's labels; a non-finite loss fails the member. ``apart(labels)``
        also has to hold for the threshold to fire (a scribbled fit: its classes apart)."""
        rows = history[first : last + 1].tolist()
        max_iter, every = history.shape[0] - 1, recent.shape[0]
        for offset, row in enumerate(rows):
            iteration = first + offset
            for b, (q, mu, loss_sim, loss_con, changed) in enumerate(row):
                if not members.active[b]:
                    continue
                if not math.isfinite(loss_sim + mu * loss_con):
                    members.errors[b] = FloatingPointError(
                        f"non-finite loss at iteration {iteration}"
                    )
                    members.active[b] = False
                    continue
                if on_iteration is not None:
                    on_iteration(b, iteration, int(q), mu)
                reason = None
                if convergence is not None:
                    members.still[b] = convergence.streak(members.still[b], changed)
                if q <= members.thresholds[b] and (
                    apart is None or apart(recent[iteration % every][b])
                ):
                    reason = "threshold"
                elif convergence is not None and members.still[b] >= convergence.window:
                    reason = "converged"
                elif iteration == max_iter:
                    reason = "max_iter"
                if reason is not None:
                    members.active[b] = False
                    members.stop_at[b] = iteration
                    members.reasons[b] = reason
                    members.seconds[b] = time.perf_counter() - start
                    # A copy: on a CPU .cpu() is a view of the buffer, which later passes overwrite.
                    members.labels[b] = recent[iteration % recent.shape[0], b].cpu().clone()
