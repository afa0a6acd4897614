"""Fit once, segment many: one network fitted on several images, reused on others.

Kim et al.'s published code has the only mode of its kind among the peers: train on a few
images, label the rest with a forward pass, continue from frame to frame on video. Here:

* :func:`fit_shared` fits one network with the DynaSeg loss and μ over batches of random crops
  drawn from all the images (crops: images of any size batch together, and an iteration costs
  the same whatever the image size);
* :func:`save_model` / :func:`load_model` keep it as a safetensors file (no pickle) with the
  settings it was fitted with, which a later use must share (the backbone, q);
* :class:`ModelSegmenter` labels images with it: one forward pass each, the label ids being the
  network's cluster ids, so one material keeps one id (and one colour) in every image;
  ``refine=N`` runs N ordinary DynaSeg iterations per image from the saved network first;
* :class:`WarmStart` continues each image's fit from the previous one's network and optimiser
  state (frames of a video), the convergence rule deciding how long each frame runs.

Both classes stand where a :class:`~dynaseg.engine.Segmenter` stands, so the pipeline, the CLI
and the framework use them unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from dynaseg.engine import (
    HISTORY_KEYS,
    OneAtATime,
    SegmentationResult,
    Segmenter,
    forward_losses,
    resolve_device,
    to_tensor,
)
from dynaseg.model import SegmentationNet
from dynaseg.outputs import atomic_write

FORMAT = "dynaseg-model/1"
MUST_MATCH = ("backbone", "n_clusters")
"""The settings a saved network fixes: what shapes its tensors."""


class ModelError(ValueError):
    """A file that is not a dynaseg model, or one fitted with other settings; names the file."""


def random_crops(
    images: Sequence[Tensor], size: int, count: int, generator: torch.Generator
) -> Tensor:
    """``count`` crops of ``size × size`` (smaller images: their largest square), resized to
    one size so that they batch; each from a random image at a random place."""
    crops = []
    for _ in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        height, width = image.shape[1:]
        side = min(size, height, width)
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        crop = image[:, top : top + side, left : left + side]
        if side != size:
            crop = torch.nn.functional.interpolate(crop[None], size=(size, size), mode="bilinear")[
                0
            ]
        crops.append(crop)
    return torch.stack(crops)


def fit_shared(
    segmenter: Segmenter,
    images: Sequence[np.ndarray | Tensor],
    seed: int = 0,
    iterations: int = 300,
    crop: int = 160,
    batch: int = 4,
    on_iteration: Callable[[int, int, float], None] | None = None,
) -> tuple[SegmentationNet, dict[str, list[float]]]:
    """Fit one network to many images: each iteration takes the DynaSeg loss (arg-max targets,
    μ from q') on a batch of random crops; it runs ``iterations`` updates (a q' threshold or the
    convergence rule mean nothing across changing crops).

    Returns:
        The network (in training mode, its BatchNorm statistics gathered over the crops) and the
        history of q', μ and both loss terms per iteration.
    """
    if not images:
        raise ValueError("fit_shared needs at least one image")
    if iterations < 1 or crop < 2 or batch < 1:
        raise ValueError(
            f"need iterations >= 1, crop >= 2, batch >= 1; got {iterations}, {crop}, {batch}"
        )
    tensors = [to_tensor(image).to(segmenter.device) for image in images]
    generator = torch.Generator().manual_seed(seed)
    net = segmenter.build_network(seed)
    optimizer = segmenter.optimizer(net.parameter_groups())
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS[:4]}
    for iteration in range(iterations):
        xs = random_crops(tensors, crop, batch, generator).to(segmenter.device)
        with segmenter.autocast():
            _, n_labels, loss_sim, loss_con = forward_losses(net, xs, segmenter.n_clusters)
        mu = segmenter.weighting(n_labels)
        loss = loss_sim + mu * loss_con
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {iteration} of the shared fit")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in zip(history, (n_labels, mu, loss_sim, loss_con), strict=True):
            history[key].append(float(torch.as_tensor(value).detach()))
        if on_iteration is not None:
            on_iteration(iteration, int(n_labels), float(mu))
    return net, history


def model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a segmenter's settings that a saved network fixes."""
    segmenter = settings.get("segmenter", settings)
    return {key: segmenter.get(key) for key in MUST_MATCH}


def save_model(path: Path, net: SegmentationNet, settings: dict[str, Any]) -> None:
    """Save a network and the settings it was fitted with as one safetensors file (atomically)."""
    tensors = {
        name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()
    }
    metadata = {"format": FORMAT, "settings": json.dumps(settings, sort_keys=True)}
    data = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda handle: handle.write(data))


def read_model(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A saved model's tensors and settings; :class:`ModelError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path}: not a dynaseg model (not a safetensors file: {error})") from None
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{path}: not a dynaseg model (a safetensors file without its settings)")
    return tensors, json.loads(metadata["settings"])


def load_model(path: Path, segmenter: Segmenter, settings: dict[str, Any]) -> SegmentationNet:
    """The network saved in ``path``, on the segmenter's device, after checking that it was
    fitted with the same backbone and q as ``settings`` (what a new network here would be)."""
    tensors, saved = read_model(path)
    ours, theirs = model_settings(settings), model_settings(saved)
    if ours != theirs:
        differ = [key for key in MUST_MATCH if ours[key] != theirs[key]]
        raise ModelError(
            f"{path}: fitted with other settings ({', '.join(differ)}: the model has "
            f"{[theirs[key] for key in differ]}, these settings {[ours[key] for key in differ]}); "
            "use the settings it was fitted with"
        )
    net = segmenter.build_network(0)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{path}: its tensors do not fit this network ({error})") from None
    return net


def file_digest(path: Path) -> str:
    """SHA-256 of a file (what a record says of the model it was labelled with)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _AroundSegmenter(OneAtATime):
    """Stands where its DynaSeg :class:`Segmenter` stands: the framework moves it to the
    trainer's device through ``device``, which moves its network too."""

    segmenter: Segmenter
    net: SegmentationNet | None

    @property
    def device(self) -> torch.device:
        return self.segmenter.device

    @device.setter
    def device(self, device: str | torch.device) -> None:
        self.segmenter.device = resolve_device(device)
        if self.net is not None:
            self.net = self.net.to(self.segmenter.device)


class ModelSegmenter(_AroundSegmenter):
    """Labels images with a saved network: one forward pass each (``refine=0``), or N DynaSeg
    iterations per image starting from it. Label ids are the network's cluster ids.

    Args:
        segmenter: the DynaSeg segmenter of the same settings (its loop refines; its network
            shape must match the model's).
        net: the fitted network (:func:`fit_shared`, or :meth:`from_file`).
        refine: DynaSeg iterations per image from the saved network (0: forward pass only).
    """

    def __init__(self, segmenter: Segmenter, net: SegmentationNet, refine: int = 0) -> None:
        if refine < 0:
            raise ValueError(f"refine must be >= 0, got {refine}")
        self.segmenter = segmenter
        self.net = net.to(segmenter.device)
        self.refine = refine
        self.n_clusters = segmenter.n_clusters
        self.max_iter = refine

    @classmethod
    def from_file(
        cls, segmenter: Segmenter, model: Path, settings: dict[str, Any], refine: int = 0
    ) -> ModelSegmenter:
        """Label with the network saved in ``model`` (checked against ``settings``)."""
        return cls(segmenter, load_model(Path(model), segmenter, settings), refine)

    def label(self, image: np.ndarray | Tensor) -> np.ndarray:
        """One forward pass: the arg-max cluster id of every pixel. BatchNorm uses the
        statistics gathered over the whole fit, not the image's own: normalised per image, a
        material's features would shift with what else is in the picture, and so its id."""
        x = to_tensor(image).to(self.device)[None]
        self.net.eval()
        with torch.no_grad(), self.segmenter.autocast():
            _, response = self.net(x)
        return response.argmax(1)[0].to(torch.int32).cpu().numpy()

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: Callable[[int, int, float], None] | None = None,
        scribble: np.ndarray | Tensor | None = None,
    ) -> SegmentationResult:
        """Label one image (after ``refine`` iterations from the saved network, if asked)."""
        start = time.perf_counter()
        if self.refine == 0 and scribble is None:
            labels = self.label(image)
            return SegmentationResult(
                labels=labels,
                iterations=0,
                stop_reason="model",
                threshold=0,
                opt_nc=None,
                seconds=time.perf_counter() - start,
                history={key: [] for key in HISTORY_KEYS},
            )
        warm = WarmStart(copy.deepcopy(self.net))
        segmenter = copy.copy(self.segmenter)
        segmenter.max_iter = max(self.refine, 1)
        return warm.fit_with(segmenter, image, seed, on_iteration, scribble)


class WarmStart(_AroundSegmenter):
    """Each fit continues from the network and optimiser state the previous one ended with
    (frames of a video): the first frame is fitted from scratch, and since a frame starts where
    the last one settled, the convergence rule stops it sooner and its ids carry over.

    Args:
        segmenter: the DynaSeg segmenter (fitted one image at a time, its labels not
            renumbered, so that ids stay those of the clusters).
    """

    def __init__(self, net: SegmentationNet | None = None, segmenter: Segmenter | None = None):
        self.net = net
        self.optimizer_state: dict[str, Any] | None = None
        self.segmenter = segmenter
        if segmenter is not None:
            self.n_clusters = segmenter.n_clusters
            self.max_iter = segmenter.max_iter

    def fit_with(
        self,
        segmenter: Segmenter,
        image: np.ndarray | Tensor,
        seed: int,
        on_iteration: Callable[[int, int, float], None] | None,
        scribble: np.ndarray | Tensor | None,
    ) -> SegmentationResult:
        """One fit with ``segmenter``, from (and then into) this start."""
        callback = None if on_iteration is None else lambda _, *rest: on_iteration(*rest)
        (result,) = segmenter.fit_many(
            [image],
            [seed],
            callback,
            scribbles=None if scribble is None else [scribble],
            warm=self,
            renumber=False,
        )
        if isinstance(result, FloatingPointError):
            raise result
        return result

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: Callable[[int, int, float], None] | None = None,
        scribble: np.ndarray | Tensor | None = None,
    ) -> SegmentationResult:
        """Fit the next frame from where the previous one ended."""
        return self.fit_with(self.segmenter, image, seed, on_iteration, scribble)
