"""One image's way through dynaseg, whichever door it came in by: fit, outputs, record, failure.

``dynaseg segment`` and ``python -m dynaseg.run`` both read their images as
:class:`dynaseg.data.Sample` dicts (a failed read arrives as ``{"id", "error"}``, see
:class:`dynaseg.data.datamodule.SafeDataset`) and hand every one to :meth:`Pipeline.submit`.
The pipeline fits same-size images together up to ``batch_size``, writes each image's files
(:func:`dynaseg.outputs.write_image`, in the door's :class:`~dynaseg.outputs.Layout`), scores it
when there is ground truth, and keeps its record; an image finished earlier (the resume rule of
:func:`dynaseg.outputs.read_done`) is read back and scored as if it had just been fitted. A
failure costs its image only: it becomes one line in :attr:`Pipeline.failures`. The doors only
orchestrate: they gather the records, write the run's tables and print.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics import Metric
from tqdm import tqdm

from dynaseg.data.datamodule import SafeDataset
from dynaseg.data.folder import ImageFiles
from dynaseg.engine import SegmentationResult, Segmenter, image_seed
from dynaseg.images import collect_inputs, resize_labels
from dynaseg.outputs import Layout, read_done, write_image
from dynaseg.reuse import ModelError, ModelSegmenter, WarmStart, file_digest, fit_shared
from dynaseg.scribble import check_classes, scribble_summary
from dynaseg.segments import Segments, as_rgb
from dynaseg.validation import ConfigError, build, one_line

log = logging.getLogger("dynaseg")
FIT_ERRORS = (FloatingPointError, RuntimeError, ValueError)
"""A fit that raises one of these fails its image only (non-finite loss, out of memory, …)."""


class ImageFailure(RuntimeError):
    """An image failed and the run is strict; the message names the file and the cause."""


def settings_of(
    config: DictConfig,
    segmenter: Segmenter,
    max_side: int | None,
    segments: Segments | None = None,
) -> dict[str, Any]:
    """What decides an image's result, for its record and the resume rule: the segmenter as
    configured (precision as resolved on this machine), the global seed, the fit size and the
    segments step where one changes the labels (``segments``, from :func:`build_segments`)."""
    settings = OmegaConf.to_container(config.segmenter, resolve=True)
    if "precision" in settings:
        settings["precision"] = segmenter.resolved_precision
    out = {"segmenter": settings, "seed": config.seed, "max_side": max_side}
    if segments is not None:
        out["segments"] = OmegaConf.to_container(config.segments, resolve=True)
    return out


def build_segments(config: DictConfig) -> Segments | None:
    """The step from labels to segments, or None where it changes nothing or ids must keep
    their meaning: a saved or shared network (``model``, ``fit_on``) and warm starts label with
    the network's cluster ids, the same from one image to the next, which connected pieces
    would renumber."""
    if "segments" not in config or any(config.get(key) for key in ("model", "fit_on")):
        return None
    if config.get("warm_start"):
        return None
    segments = build(config, "segments")
    return None if segments.changes_nothing else segments


def build_segmenter(
    config: DictConfig, max_side: int | None
) -> tuple[Any, dict[str, Any], Segments | None]:
    """The per-image method of a config, the settings that decide its results and its segments
    step, for both doors: the configured segmenter, used as is, through a saved network
    (``model``, with ``refine``) or warm-started from image to image (``warm_start``).

    Raises:
        ConfigError: a part that cannot be built, or a model file that does not fit.
    """
    segmenter = build(config, "segmenter")
    segments = build_segments(config)
    settings = settings_of(config, segmenter, max_side, segments)
    model, fit_on = config.get("model"), config.get("fit_on")
    if model is not None:
        settings.update(model={"path": str(model), "sha256": file_digest(Path(model))})
        settings.update(refine=config.refine)
        try:
            labeller = ModelSegmenter.from_file(segmenter, Path(model), settings, config.refine)
        except ModelError as error:
            raise ConfigError(str(error)) from None
        return labeller, settings, segments
    if fit_on is not None:
        shared = OmegaConf.to_container(config.fit_shared, resolve=True)
        settings.update(fit_on=list(fit_on), fit_shared=shared, refine=config.refine)
        images = shared_fit_images(list(fit_on), max_side, config.max_pixels)
        log.info("fitting one network on %d image(s) (fit_on)", len(images))
        net, _ = fit_shared(segmenter, images, config.seed, **shared)
        return ModelSegmenter(segmenter, net, config.refine), settings, segments
    if config.get("warm_start"):
        settings.update(warm_start=True)
        return WarmStart(segmenter=segmenter), settings, segments
    return segmenter, settings, segments


def shared_fit_images(specs: list[str], max_side: int | None, max_pixels: int | None) -> list:
    """The readable images of ``fit_on`` (files, folders, globs), as the fit sees them; the
    unreadable ones are reported and left out."""
    images, failures = readable_images(specs, max_side, max_pixels)
    for message in failures:
        log.error("fit_on: %s", message)
    if not images:
        raise ConfigError(f"fit_on={specs}: no readable image to fit on")
    return images


def readable_images(
    specs: list[str], max_side: int | None, max_pixels: int | None
) -> tuple[list, list[str]]:
    """The images of files, folders and globs as a fit sees them, and why the others failed:
    the one reading of a shared fit's inputs (``fit_on`` and ``dynaseg fit``)."""
    paths, failures = collect_inputs(specs)
    dataset = SafeDataset(ImageFiles(paths, max_side), max_pixels)
    images = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if "error" in sample:
            failures.append(sample["error"])
        else:
            images.append(sample["image"])
    return images, failures


def flatten_scores(name: str, values: Mapping[str, torch.Tensor]) -> dict[str, float | int]:
    """``{"all": t, …}`` of metric ``bsd500`` → ``{"bsd500/all": number, …}``."""
    return {f"{name}/{key}": value.item() for key, value in values.items()}


class Pipeline:
    """Segments, writes and scores images one by one (or in same-size batches).

    Args:
        segmenter: the per-image method.
        out: the output folder; ``layout`` says where each file goes.
        settings: what decides a result (:func:`settings_of`), written into every record.
        metrics: name → metric, updated with every scored image (none: no scores).
        batch_size: same-size images fitted together.
        resume: images finished earlier are read back instead of fitted.
        strict: the first failure raises :class:`ImageFailure` instead of being listed.
        details: overlay and per-iteration history for the first N images (None: all).
        progress: a progress bar per image fitted alone.
        segments: the step from a fit's labels to the segments written (None: labels as
            fitted); an image with a scribble keeps its labels, which are the scribble's classes.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        out: Path,
        layout: Layout,
        settings: dict[str, Any],
        metrics: Mapping[str, Metric] | None = None,
        batch_size: int = 1,
        resume: bool = False,
        strict: bool = False,
        details: int | None = None,
        progress: bool = False,
        segments: Segments | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.segments = segments
        self.out = Path(out)
        self.layout = layout
        self.settings = settings
        self.metrics = metrics or {}
        self.batch_size = batch_size
        self.resume = resume
        self.strict = strict
        self.details = details
        self.progress = progress
        self.records: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.n_resumed = 0
        self.n_detailed = 0
        self.pending: dict[tuple[int, ...], list[dict[str, Any]]] = {}

    def submit(self, sample: dict[str, Any]) -> None:
        """Take one sample: fail it, read it back, or queue it for the next fit of its size."""
        if "error" in sample:
            self.fail(sample["id"], sample["error"])
            return
        if self.resume and self.read_back(sample):
            return
        if "scribble" in sample:
            problem = self.scribble_problem(sample)
            if problem is not None:
                self.fail(sample["id"], problem)
            else:
                self.fit([sample])  # a scribbled fit takes one image at a time
            return
        group = self.pending.setdefault(tuple(sample["image"].shape), [])
        group.append(sample)
        if len(group) == self.batch_size:
            self.fit(self.pending.pop(tuple(sample["image"].shape)))

    def flush(self) -> None:
        """Fit the incomplete batches left at the end."""
        for shape in list(self.pending):
            self.fit(self.pending.pop(shape))

    def scribble_problem(self, sample: dict[str, Any]) -> str | None:
        """Why this method cannot follow the sample's scribble (None: it can)."""
        n_clusters = getattr(self.segmenter, "n_clusters", None)
        if n_clusters is None:
            return f"{sample['scribble_path']}: {type(self.segmenter).__name__} takes no scribbles"
        return check_classes(sample["scribble_path"], sample["scribble"].numpy(), n_clusters)

    def read_back(self, sample: dict[str, Any]) -> bool:
        """Score and keep an image finished earlier; False if it must be fitted."""
        done = read_done(self.out, self.layout, sample["id"], sample["size"], self.settings)
        if isinstance(done, str):
            if done != "not done":
                log.warning("%s: %s; segmenting it again", sample["id"], done)
            return False
        labels, record = done
        record.update(self.score(labels, sample["gt"]))  # today's metrics, e.g. one added since
        self.records.append(record)
        self.n_resumed += 1
        return True

    def fit(self, samples: list[dict[str, Any]]) -> None:
        """Fit same-size samples together, then write each one's files."""
        seeds = [image_seed(self.settings["seed"], sample["id"]) for sample in samples]
        images = [sample["image"] for sample in samples]
        scribbles = [sample["scribble"] for sample in samples if "scribble" in sample] or None
        try:
            with torch.enable_grad():
                if len(samples) == 1 and self.progress:
                    results: list[Any] = [self.fit_with_bar(samples[0], seeds[0])]
                elif scribbles is not None:
                    results = self.segmenter.fit_many(images, seeds, scribbles=scribbles)
                else:
                    results = self.segmenter.fit_many(images, seeds)
        except FIT_ERRORS as error:
            results = [error] * len(samples)
        for sample, seed, result in zip(samples, seeds, results, strict=True):
            if isinstance(result, Exception):
                reason = result if isinstance(result, FloatingPointError) else repr_error(result)
                self.fail(sample["id"], f"{sample['path']}: {reason}; image skipped")
                continue
            try:
                self.save(sample, seed, result)
            except OSError as error:
                self.fail(sample["id"], f"{sample['path']}: cannot write the outputs ({error})")

    def fit_with_bar(self, sample: dict[str, Any], seed: int) -> SegmentationResult:
        """One image's fit with a progress bar showing q' and μ."""
        total = self.segmenter.max_iter + 1
        with tqdm(total=total, desc=sample["id"], leave=False) as bar:

            def progress(iteration: int, q: int, mu: float) -> None:
                bar.update(1)
                bar.set_postfix(q=q, mu=f"{mu:.3g}", refresh=False)

            return self.segmenter.fit(
                sample["image"], seed=seed, on_iteration=progress, scribble=sample.get("scribble")
            )

    def save(self, sample: dict[str, Any], seed: int, result: SegmentationResult) -> None:
        """Write an image's files and record (scored as saved, so a read-back scores alike)."""
        image = as_rgb(sample["image"])
        stepped = self.segments is not None and "scribble" not in sample
        segments = self.segments(result.labels, image) if stepped else result.labels
        labels = resize_labels(segments, tuple(sample["size"]))
        record: dict[str, Any] = {
            "id": sample["id"],
            "input": str(sample["path"]),
            "size": list(sample["size"]),
            "processed_size": list(image.shape[:2]),
            **result.summary(),
            "n_segments": int(np.unique(segments).size),
            "image_seed": seed,
            **self.score(labels, sample["gt"]),
            "settings": self.settings,
        }
        scribble = sample["scribble"].numpy() if "scribble" in sample else None
        if scribble is not None:
            summary = scribble_summary(result.labels, scribble)
            record["scribble"] = {"path": sample["scribble_path"], **summary}
        detailed = self.details is None or self.n_detailed < self.details
        if detailed:
            self.n_detailed += 1
            record["history"] = result.history
        gt = sample["gt"].numpy()
        write_image(
            self.out,
            self.layout,
            sample["id"],
            image,
            labels,
            record,
            gt,
            detailed,
            scribble,
            result.labels if stepped else None,
        )
        self.records.append(record)
        log.info(
            "%s: %d clusters after %d iterations (%s) in %.1f s",
            sample["path"],
            record["n_clusters"],
            record["iterations"],
            record["stop_reason"],
            record["seconds"],
        )

    def score(self, labels: np.ndarray, gt: torch.Tensor) -> dict[str, float | int]:
        """Add one prediction to every metric (torchmetrics' ``forward``); its own scores."""
        scores: dict[str, float | int] = {}
        if gt.shape[0] == 0:
            return scores
        for name, metric in self.metrics.items():
            scores.update(flatten_scores(name, metric(labels, gt)))
        return scores

    def fail(self, item_id: str, message: str) -> None:
        """Record a failed image (one line naming the file and the cause); raise if strict."""
        message = one_line(message)
        log.error("%s", message)
        self.failures.append({"id": item_id, "error": message})
        if self.strict:
            raise ImageFailure(message)


def repr_error(error: BaseException) -> str:
    """``"Type: message"`` of an exception."""
    return f"{type(error).__name__}: {error}"
