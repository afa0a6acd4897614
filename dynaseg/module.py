"""Lightning orchestration: each test step is one image's whole DynaSeg fit.

The maths stays in :mod:`dynaseg.engine`; this module only moves the fit to the trainer's device,
scores the prediction, writes the run's files, and syncs across processes. The fit needs
gradients inside the test loop, hence ``inference_mode=False`` on the Trainer and
``torch.enable_grad()`` here.

A run survives being killed at any moment. Every file is written atomically (temporary file,
fsync, rename), and an image's files are written in a fixed order: ``predictions/<id>.png``, its
overlay, then ``records/<id>.json`` (its facts and scores), which marks the image done. A resumed
run (``resume=True``) reads the done images' predictions back instead of fitting them again, and
scores them exactly as a fresh prediction: the metric states are integer sums, so the final
``metrics.json`` equals that of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torch import nn
from torchmetrics import Metric

from dynaseg.engine import SegmentationResult, Segmenter, image_seed
from dynaseg.images import resize_labels
from dynaseg.outputs import FAILURE_FIELDS, label_image, overlay, save_json, save_png, write_csv
from dynaseg.report import PICTURE_COLUMNS, report_pictures, save_report_pictures, write_report

log = logging.getLogger(__name__)
RECORD_FIELDS = ["id", "n_clusters", "iterations", "stop_reason", "threshold", "opt_nc", "seconds"]
NOT_IN_CSV = {"history"}
FIT_ERRORS = (FloatingPointError, RuntimeError, ValueError)
"""A fit that raises one of these fails its image only (non-finite loss, out of memory, …)."""


class ImageFailure(RuntimeError):
    """An image failed and the run is strict (``strict=True``); the message names file and cause."""


def local_copy(metric: Metric) -> Metric:
    """An empty copy of a metric that never syncs, to score one image on one rank."""
    copy = metric.clone()
    copy.reset()
    copy.sync_on_compute = False
    copy._to_sync = False  # compute() reads this flag, set from sync_on_compute at init
    return copy


def flatten_scores(name: str, values: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """``{"all": t, …}`` of metric ``bsd500`` → ``{"bsd500/all": number, …}``."""
    return {f"{name}/{key}": value.item() for key, value in values.items()}


def gather(objects: list[Any]) -> list[Any]:
    """All ranks' lists concatenated (the list itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return objects
    parts: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, objects)
    return [item for part in parts for item in part]


def fsync_dir(path: Path) -> None:
    """Make the renames into a folder durable, so a power loss cannot undo them (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def one_line(message: str) -> str:
    """A message on one line (decoders' messages may span several)."""
    return " ".join(message.split())


class DynaSegModule(LightningModule):
    """Segments every test image with its own fit and scores the predictions.

    Args:
        segmenter: the per-image method (built from ``conf/segment.yaml``).
        metrics: name → metric; their states are sums, reduced across ranks before matching.
        seed: global seed; each image's fit is seeded from (seed, image id).
        output_dir: the run directory (predictions/, records/, overlays/, per_image.csv,
            failures.csv, metrics.json).
        save_overlays: overlays written (and their curves logged) for the first N images of
            each rank.
        run_name: names the run's row in the W&B summary table (one row per run, so that the
            runs of a sweep line up as the paper's ablation tables).
        resume: images with a record in ``output_dir`` are read back, not fitted again.
        strict: stop at the first image that fails (:class:`ImageFailure`) instead of
            recording it in failures.csv and going on.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        metrics: dict[str, Metric],
        seed: int,
        output_dir: str | Path,
        save_overlays: int = 4,
        run_name: str = "run",
        resume: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.metrics = nn.ModuleDict(metrics)
        self.seed = seed
        self.output_dir = Path(output_dir)
        self.save_overlays = save_overlays
        self.run_name = run_name
        self.resume = resume
        self.strict = strict
        self.records: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.n_resumed = 0
        self.n_overlays = 0
        self.summary: dict[str, float] = {}
        self.started = time.perf_counter()

    def on_test_start(self) -> None:
        self.segmenter.device = self.device
        self.started = time.perf_counter()

    def path(self, folder: str, item_id: str, suffix: str) -> Path:
        """``<output_dir>/<folder>/<id><suffix>``."""
        return self.output_dir / folder / f"{item_id}{suffix}"

    def test_step(self, samples: list[dict[str, Any]], batch_idx: int) -> None:
        """Fit the step's images (same-size ones together) and save and score each."""
        pending: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for sample in samples:
            if "error" in sample:
                self.fail(sample["id"], sample["error"])
                continue
            saved = self.load_done(sample["id"], tuple(sample["size"])) if self.resume else None
            if saved is not None:
                labels, record = saved
                self.score(labels, sample["gt"])
                self.records.append(record)
                self.n_resumed += 1
                continue
            pending.setdefault(tuple(sample["image"].shape), []).append(sample)
        for group in pending.values():
            seeds = [image_seed(self.seed, sample["id"]) for sample in group]
            try:
                with torch.enable_grad():
                    results = self.segmenter.fit_many([sample["image"] for sample in group], seeds)
            except FIT_ERRORS as error:
                results = [error] * len(group)
            for sample, result in zip(group, results, strict=True):
                if isinstance(result, Exception):
                    reason = (
                        result
                        if isinstance(result, FloatingPointError)
                        else f"{type(result).__name__}: {result}"
                    )
                    self.fail(sample["id"], f"{sample['path']}: {reason}; image skipped")
                else:
                    self.save(sample, result)

    def save(self, sample: dict[str, Any], result: SegmentationResult) -> None:
        """Write an image's prediction (and overlay), then its record, which marks it done."""
        item_id = sample["id"]
        # Scored as saved, so a prediction read back on resume scores identically.
        labels = label_image(resize_labels(result.labels, tuple(sample["size"])))
        save_png(self.path("predictions", item_id, ".png"), labels)
        record: dict[str, Any] = {"id": item_id, **result.summary()}
        record.update(self.score(labels, sample["gt"]))
        image = (sample["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        save_report_pictures(self.output_dir, item_id, image, sample["gt"].numpy())
        if self.n_overlays < self.save_overlays:
            self.n_overlays += 1
            save_png(self.path("overlays", item_id, ".png"), overlay(image, result.labels))
            record["history"] = result.history
        # The record marks the image done: it must never be on disk before the prediction.
        fsync_dir(self.output_dir / "predictions")
        save_json(self.path("records", item_id, ".json"), record)
        self.records.append(record)

    def score(self, labels: np.ndarray, gt: torch.Tensor) -> dict[str, float | int]:
        """Add one prediction to the dataset metrics; return its own scores."""
        scores: dict[str, float | int] = {}
        if gt.shape[0] == 0:
            return scores
        for name, metric in self.metrics.items():
            metric.update(labels, gt)
            single = local_copy(metric)
            single.update(labels, gt)
            scores.update(flatten_scores(name, single.compute()))
        return scores

    def load_done(
        self, item_id: str, size: tuple[int, int]
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The saved prediction and record of a done image; None if it must be computed."""
        record_path = self.path("records", item_id, ".json")
        if not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text())
            with Image.open(self.path("predictions", item_id, ".png")) as image:
                labels = np.asarray(image).copy()
        except (OSError, ValueError) as error:
            log.warning("%s: saved result unreadable (%s); segmenting it again", item_id, error)
            return None
        if labels.shape != size:
            log.warning(
                "%s: saved prediction is %s, not %s; segmenting it again",
                item_id,
                labels.shape,
                size,
            )
            return None
        return labels, record

    def fail(self, item_id: str, message: str) -> None:
        """Record a failed image (one line naming the file and the cause); stop if strict."""
        message = one_line(message)
        log.error("%s", message)
        self.failures.append({"id": item_id, "error": message})
        if self.strict:
            write_csv(self.output_dir / "failures.csv", self.failures, FAILURE_FIELDS)
            raise ImageFailure(message)

    def on_test_epoch_end(self) -> None:
        scores: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if metric.update_count or dist.is_initialized():
                scores.update(flatten_scores(name, metric.compute()))
        records = sorted(gather(self.records), key=lambda row: row["id"])
        failures = sorted(gather(self.failures), key=lambda row: row["id"])
        n_resumed = sum(gather([self.n_resumed]))
        curves = {row["id"]: row["history"] for row in records if "history" in row}
        self.summary = {
            **scores,
            "n_images": len(records),
            "n_failed": len(failures),
            "seconds": round(time.perf_counter() - self.started, 1),
        }
        if self.trainer.is_global_zero:
            self.write_run_files(records, failures)
            log.info("report: %s", write_report(self.output_dir))
            self.log_results(scores, records, curves)
            if n_resumed:
                log.info("%d image(s) were done earlier and read back (resume)", n_resumed)
            if failures:
                log.warning(
                    "%d image(s) failed and were skipped, see %s",
                    len(failures),
                    self.output_dir / "failures.csv",
                )

    def write_run_files(self, records: list[dict[str, Any]], failures: list[dict]) -> None:
        """per_image.csv, failures.csv and metrics.json (scores first, then run facts)."""
        score_fields = sorted(
            {key for row in records for key in row} - {*RECORD_FIELDS, *NOT_IN_CSV}
        )
        write_csv(self.output_dir / "per_image.csv", records, RECORD_FIELDS + score_fields)
        write_csv(self.output_dir / "failures.csv", failures, FAILURE_FIELDS)
        save_json(self.output_dir / "metrics.json", self.summary)

    def log_results(
        self,
        scores: dict[str, float],
        records: list[dict[str, Any]],
        curves: dict[str, dict[str, list[float]]],
    ) -> None:
        """Send the final scores to every logger; W&B also gets tables, overlays and curves."""
        for logger in self.loggers:
            logger.log_metrics({f"test/{key}": value for key, value in scores.items()})
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    "summary", columns=["run", *scores], data=[[self.run_name, *scores.values()]]
                )
                columns = sorted({key for row in records for key in row} - NOT_IN_CSV)
                pictures = report_pictures(self.output_dir, [row["id"] for row in records])
                logger.log_table(
                    "per_image",
                    columns=[*columns, *PICTURE_COLUMNS],
                    data=[
                        [row.get(column) for column in columns] + pictures[row["id"]]
                        for row in records
                    ],
                )
                overlays = sorted((self.output_dir / "overlays").glob("*.png"))
                if overlays:
                    logger.log_image(
                        "overlays", [str(p) for p in overlays], caption=[p.stem for p in overlays]
                    )
                for item_id, history in curves.items():
                    logger.log_table(
                        f"curves/{item_id}",
                        columns=["iteration", *history],
                        data=[
                            [i, *values]
                            for i, values in enumerate(zip(*history.values(), strict=True))
                        ],
                    )
            logger.save()
        log.info("scores: %s", json.dumps(scores, indent=1))
