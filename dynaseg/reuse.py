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
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from dynaseg.engine import (
    HISTORY_KEYS,
    FitState,
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
        crop = image[None, :, top : top + side, left : left + side]
        if side != size:
            crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear")
        crops.append(crop)
    return torch.cat(crops)


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
    convergence rule mean nothing across changing crops). As in the per-image loop, the host
    reads the numbers in bursts (``Segmenter.host_reads_every``), never waiting on a GPU.

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
    keys = HISTORY_KEYS[:4]
    history: dict[str, list[float]] = {key: [] for key in keys}
    every, unread = segmenter.host_reads_every, []
    for iteration in range(iterations):
        xs = random_crops(tensors, crop, batch, generator)
        with segmenter.autocast():
            _, n_labels, loss_sim, loss_con = forward_losses(net, xs, segmenter.n_clusters)
        mu = torch.as_tensor(segmenter.weighting(n_labels), device=xs.device)
        optimizer.zero_grad(set_to_none=True)
        (loss_sim + mu * loss_con).backward()
        optimizer.step()
        unread.append(
            torch.stack([n_labels.float(), mu.float(), loss_sim.detach(), loss_con.detach()])
        )
        if len(unread) == every or iteration == iterations - 1:
            first = iteration + 1 - len(unread)
            for offset, (q, mu_value, sim, con) in enumerate(torch.stack(unread).tolist()):
                if not math.isfinite(sim + mu_value * con):
                    raise FloatingPointError(
                        f"non-finite loss at iteration {first + offset} of the shared fit"
                    )
                for key, value in zip(keys, (q, mu_value, sim, con), strict=True):
                    history[key].append(value)
                if on_iteration is not None:
                    on_iteration(first + offset, int(q), mu_value)
            unread.clear()
    return net, history


def model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's settings (:func:`dynaseg.pipeline.settings_of`) that a saved network
    fixes."""
    return {key: settings["segmenter"].get(key) for key in MUST_MATCH}


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
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
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
    """Stands where its DynaSeg :class:`Segmenter` stands: ``n_clusters``, ``max_iter`` and
    ``device`` (which the framework sets to the trainer's) are those of the segmenter."""

    segmenter: Segmenter

    @property
    def n_clusters(self) -> int:
        return self.segmenter.n_clusters

    @property
    def device(self) -> torch.device:
        return self.segmenter.device

    @device.setter
    def device(self, device: str | torch.device) -> None:
        self.segmenter.device = resolve_device(device)


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
        self.net = net
        self.refine = refine
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
        self.net = self.net.to(self.device).eval()
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
        segmenter = copy.copy(self.segmenter)
        segmenter.max_iter = max(self.refine, 1)
        state = FitState(copy.deepcopy(self.net))
        return segmenter.fit(
            image, seed, on_iteration, scribble=scribble, state=state, renumber=False
        )


class WarmStart(_AroundSegmenter):
    """Each fit continues from the network and optimiser state the previous one ended with
    (frames of a video): the first frame is fitted from scratch, and since a frame starts where
    the last one settled, the convergence rule stops it sooner and its ids carry over.

    Args:
        segmenter: the DynaSeg segmenter (fitted one image at a time, its labels not
            renumbered, so that ids stay those of the clusters).
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.state = FitState()
        self.max_iter = segmenter.max_iter

    def fit(
        self,
        image: np.ndarray | Tensor,
        seed: int = 0,
        on_iteration: Callable[[int, int, float], None] | None = None,
        scribble: np.ndarray | Tensor | None = None,
    ) -> SegmentationResult:
        """Fit the next frame from where the previous one ended."""
        return self.segmenter.fit(
            image, seed, on_iteration, scribble=scribble, state=self.state, renumber=False
        )
