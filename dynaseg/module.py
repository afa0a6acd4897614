"""Lightning orchestration of a run: the images go through :class:`dynaseg.pipeline.Pipeline`.

What happens to one image (fit, files, record, scores, resume, failure) is the pipeline's, the
same as for ``dynaseg segment``; this module feeds it the test steps' samples on the trainer's
device, then gathers the records across processes and writes the run's tables and report. The
fit needs gradients inside the test loop, hence ``inference_mode=False`` on the Trainer (the
pipeline enables them).

A run survives being killed at any moment: every file is written atomically and an image's
record last (:func:`dynaseg.outputs.write_image`), and a resumed run (``resume=True``) reads the
done images back and scores them exactly as fresh predictions: the metric states are integer
sums, so the final ``metrics.json`` equals that of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torchmetrics import Metric

from dynaseg.engine import Segmenter
from dynaseg.outputs import FAILURE_FIELDS, RUN, save_json, write_csv
from dynaseg.pipeline import ImageFailure, Pipeline, flatten_scores
from dynaseg.report import PICTURE_COLUMNS, report_pictures, write_report
from dynaseg.segments import Segments

log = logging.getLogger(__name__)
RECORD_FIELDS = [
    "id",
    "n_clusters",
    "n_segments",
    "iterations",
    "stop_reason",
    "threshold",
    "opt_nc",
    "seconds",
]


def gather(objects: list[Any]) -> list[Any]:
    """All ranks' lists concatenated (the list itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return objects
    parts: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, objects)
    return [item for part in parts for item in part]


class DynaSegModule(LightningModule):
    """Segments every test image with its own fit and scores the predictions.

    Args:
        segmenter: the per-image method (built from ``conf/segment.yaml``).
        metrics: name → metric; their states are sums, reduced across ranks before matching.
        settings: what decides a result (:func:`dynaseg.pipeline.settings_of`), seed included.
        output_dir: the run directory (:data:`dynaseg.outputs.RUN` plus per_image.csv,
            failures.csv, metrics.json).
        save_overlays: overlays written (and their curves logged) for the first N images of
            each rank.
        run_name: names the run's row in the W&B summary table (one row per run, so that the
            runs of a sweep line up as the paper's ablation tables).
        resume: images with a record in ``output_dir`` are read back, not fitted again.
        strict: stop at the first image that fails (:class:`ImageFailure`) instead of
            recording it in failures.csv and going on.
        batch_size: same-size images fitted together.
        segments: the step from labels to segments (:func:`dynaseg.pipeline.build_segments`).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        metrics: dict[str, Metric],
        settings: dict[str, Any],
        output_dir: str | Path,
        save_overlays: int = 4,
        run_name: str = "run",
        resume: bool = False,
        strict: bool = False,
        batch_size: int = 1,
        segments: Segments | None = None,
    ) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.metrics = nn.ModuleDict(metrics)
        self.output_dir = Path(output_dir)
        self.run_name = run_name
        self.pipeline = Pipeline(
            segmenter,
            self.output_dir,
            RUN,
            settings,
            self.metrics,
            batch_size=batch_size,
            resume=resume,
            strict=strict,
            details=save_overlays,
            segments=segments,
        )
        self.summary: dict[str, float] = {}
        self.started = time.perf_counter()

    def on_test_start(self) -> None:
        self.segmenter.device = self.device
        self.started = time.perf_counter()

    def test_step(self, samples: list[dict[str, Any]], batch_idx: int) -> None:
        """Hand the step's samples to the pipeline (it fits same-size ones together)."""
        for sample in samples:
            self.guarded(self.pipeline.submit, sample)

    def guarded(self, step: Any, *args: Any) -> None:
        """Run a pipeline step; a strict run's failure leaves failures.csv before it stops."""
        try:
            step(*args)
        except ImageFailure:
            write_csv(self.output_dir / "failures.csv", self.pipeline.failures, FAILURE_FIELDS)
            raise

    def on_test_epoch_end(self) -> None:
        self.guarded(self.pipeline.flush)
        scores: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if metric.update_count or dist.is_initialized():
                scores.update(flatten_scores(name, metric.compute()))
        records = sorted(gather(self.pipeline.records), key=lambda row: row["id"])
        failures = sorted(gather(self.pipeline.failures), key=lambda row: row["id"])
        n_resumed = sum(gather([self.pipeline.n_resumed]))
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
        score_fields = sorted({key for row in records for key in row if "/" in key})
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
                columns = RECORD_FIELDS + sorted({k for row in records for k in row if "/" in k})
                pictures = report_pictures(self.output_dir, [row["id"] for row in records])
                logger.log_table(
                    "per_image",
                    columns=[*columns, *PICTURE_COLUMNS],
                    data=[
                        [row.get(column) for column in columns] + pictures[row["id"]]
                        for row in records
                    ],
                )
                overlays = sorted(RUN.path(self.output_dir, "overlay", "*").parent.glob("*.png"))
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
