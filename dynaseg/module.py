"""Lightning orchestration: each test step is one image's whole DynaSeg fit.

The maths stays in :mod:`dynaseg.engine`; this module only moves the fit to the trainer's device,
scores the prediction, writes the run's files, and syncs across processes. The fit needs
gradients inside the test loop, hence ``inference_mode=False`` on the Trainer and
``torch.enable_grad()`` here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torchmetrics import Metric

from dynaseg.engine import Segmenter, image_seed
from dynaseg.images import resize_labels
from dynaseg.outputs import atomic_write, label_image, overlay, save_json, save_png

log = logging.getLogger(__name__)
RECORD_FIELDS = ["id", "n_clusters", "iterations", "stop_reason", "threshold", "opt_nc", "seconds"]


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


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    """Atomically write rows as CSV with these columns (missing values left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode()))


class DynaSegModule(LightningModule):
    """Segments every test image with its own fit and scores the predictions.

    Args:
        segmenter: the per-image method (built from ``conf/segment.yaml``).
        metrics: name → metric; their states are sums, reduced across ranks before matching.
        seed: global seed; each image's fit is seeded from (seed, image id).
        output_dir: the run directory (predictions/, overlays/, per_image.csv, metrics.json).
        save_overlays: overlays written (and logged) for the first N images of each rank.
        run_name: names the run's row in the W&B summary table (one row per run, so that the
            runs of a sweep line up as the paper's ablation tables).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        metrics: dict[str, Metric],
        seed: int,
        output_dir: str | Path,
        save_overlays: int = 4,
        run_name: str = "run",
    ) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.metrics = nn.ModuleDict(metrics)
        self.seed = seed
        self.output_dir = Path(output_dir)
        self.save_overlays = save_overlays
        self.run_name = run_name
        self.records: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.curves: dict[str, dict[str, list[float]]] = {}
        self.summary: dict[str, float] = {}
        self.started = time.perf_counter()

    def on_test_start(self) -> None:
        self.segmenter.device = self.device
        self.started = time.perf_counter()

    def test_step(self, sample: dict[str, Any], batch_idx: int) -> None:
        if "error" in sample:
            log.error("%s: %s", sample["id"], sample["error"])
            self.failures.append({"id": sample["id"], "error": sample["error"]})
            return
        item_id = sample["id"]
        try:
            with torch.enable_grad():
                result = self.segmenter.fit(sample["image"], seed=image_seed(self.seed, item_id))
        except FloatingPointError as error:
            log.error("%s: %s", item_id, error)
            self.failures.append({"id": item_id, "error": f"FloatingPointError: {error}"})
            return
        labels = resize_labels(result.labels, tuple(sample["size"]))
        save_png(self.output_dir / "predictions" / f"{item_id}.png", label_image(labels))
        record: dict[str, Any] = {"id": item_id, **result.summary()}
        gt = sample["gt"]
        if gt.shape[0] > 0:
            for name, metric in self.metrics.items():
                metric.update(labels, gt)
                single = local_copy(metric)
                single.update(labels, gt)
                record.update(flatten_scores(name, single.compute()))
        if len(self.curves) < self.save_overlays:
            image = (sample["image"].permute(1, 2, 0) * 255).round().byte().numpy()
            save_png(self.output_dir / "overlays" / f"{item_id}.png", overlay(image, result.labels))
            self.curves[item_id] = result.history
        self.records.append(record)

    def on_test_epoch_end(self) -> None:
        scores: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if metric.update_count or dist.is_initialized():
                scores.update(flatten_scores(name, metric.compute()))
        records = sorted(gather(self.records), key=lambda row: row["id"])
        failures = sorted(gather(self.failures), key=lambda row: row["id"])
        curves = dict(sorted(gather(list(self.curves.items()))))
        self.summary = {
            **scores,
            "n_images": len(records),
            "n_failed": len(failures),
            "seconds": round(time.perf_counter() - self.started, 1),
        }
        if self.trainer.is_global_zero:
            self.write_run_files(records, failures)
            self.log_results(scores, records, curves)

    def write_run_files(self, records: list[dict[str, Any]], failures: list[dict]) -> None:
        """per_image.csv, failures.csv and metrics.json (scores first, then run facts)."""
        score_fields = sorted({key for row in records for key in row} - set(RECORD_FIELDS))
        write_csv(self.output_dir / "per_image.csv", records, RECORD_FIELDS + score_fields)
        write_csv(self.output_dir / "failures.csv", failures, ["id", "error"])
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
                columns = sorted({key for row in records for key in row})
                logger.log_table(
                    "per_image",
                    columns=columns,
                    data=[[row.get(column) for column in columns] for row in records],
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
