"""How T and the fitting size change BSDS500 scores: one fit per image, scored at many iterations.

    python experiments/iterations_study.py --root ../shared/data/BSDS500/data --split train \
        --limit 10 --experiment bsd_fsf_cnn --max-side 160 --checkpoints 0 50 100 300 1000 \
        --out experiments/results/iterations_train_fsf_160px [hydra overrides …]

Each image is fitted once with T = the last checkpoint (and the preset's stopping rule); the label
map at every checkpoint is kept (``Segmenter.fit(snapshots=…)``) and scored as the harness scores
a prediction, so one fit shows what every smaller T would have given. A fit that stops early
(q' reached its threshold) is scored with its final labels at the later checkpoints, as a run
with that T would be. Rows go to ``<out>.csv`` as each image finishes (a rerun skips the images
already there); ``<out>.md`` pools them per checkpoint, with the silhouette estimate opt_nC
against the number of segments of the ground truth, and any ``--compare`` CSV (a run at other
settings) pooled over the same images. Used to choose the reduced settings of
``table1.py`` and to tune on train.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from tables import HEADER, cells, markdown, parse_keeping_argv, pool, read_rows, study_arguments

from dynaseg.config import compose_config
from dynaseg.engine import image_seed
from dynaseg.images import resize_labels
from dynaseg.module import flatten_scores

FIELDS = ("id", "t", "q", "stop_iteration", "opt_nc", "gt_segments", "seconds")


def score(metrics: dict[str, Any], labels: Any, gt: Any) -> dict[str, float | int]:
    """One prediction's scores with fresh copies of the run's metrics."""
    out: dict[str, float | int] = {}
    for name, metric in metrics.items():
        metric.reset()
        metric.update(labels, gt)
        out.update(flatten_scores(name, metric.compute()))
    return out


def study_image(
    config: Any, segmenter: Any, metrics: dict[str, Any], sample: dict, checkpoints: list[int]
) -> list[dict[str, Any]]:
    """Fit one image once; one row per checkpoint."""
    result = segmenter.fit(
        sample["image"], image_seed(config.seed, sample["id"]), snapshots=checkpoints
    )
    gt = sample["gt"]
    gt_segments = sum(int(a.unique().numel()) for a in gt) / max(1, gt.shape[0])
    rows = []
    for t in checkpoints:
        reached = min(t, result.iterations)
        labels = result.snapshots.get(reached, result.labels)
        row = {
            "id": sample["id"],
            "t": t,
            "q": int(result.history["q"][reached]),
            "stop_iteration": result.iterations,
            "opt_nc": result.opt_nc,
            "gt_segments": round(gt_segments, 2),
            "seconds": round(result.seconds, 1),
        }
        row.update(score(metrics, resize_labels(labels, tuple(sample["size"])), gt))
        rows.append(row)
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the CSV (header first if new), flushed to disk per image."""
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
        handle.flush()


def report(args: argparse.Namespace, rows: list[dict[str, str]]) -> str:
    """Pooled scores per checkpoint, and the silhouette estimate against the ground truth."""
    ids = sorted({row["id"] for row in rows})
    by_t: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_t.setdefault(int(row["t"]), []).append(row)
    table = []
    for t in sorted(by_t):
        group = by_t[t]
        mean_q = sum(float(row["q"]) for row in group) / len(group)
        table.append([str(t), f"{mean_q:.1f}", *cells(pool(group))])
    for path in args.compare:
        reference = [row for row in read_rows(path) if row["id"] in ids]
        label = f"`{path.name}`"
        if "t" in reference[0]:  # another study: its last checkpoint
            last_t = max(int(row["t"]) for row in reference)
            reference = [row for row in reference if int(row["t"]) == last_t]
            label += f" at T = {last_t}"
        table.append([label, "–", *cells(pool(reference))])
    last = by_t[max(by_t)]
    opt = [float(row["opt_nc"]) for row in last if row["opt_nc"] not in ("", "None")]
    gt = [float(row["gt_segments"]) for row in last]
    early = sum(int(row["stop_iteration"]) < max(by_t) for row in last)
    lines = [
        f"# Scores against T: {args.experiment}, {args.split}, {len(ids)} images, "
        f"long side {args.max_side or 'native'}",
        "",
        markdown(["T", "mean q'"], HEADER, table),
        f"Fits stopped before the last checkpoint: {early} of {len(last)}. "
        + (
            f"Silhouette opt_nC: mean {sum(opt) / len(opt):.1f} (range {min(opt):.0f}–"
            f"{max(opt):.0f}); "
            if opt
            else ""
        )
        + f"GT segments per annotation: mean {sum(gt) / len(gt):.1f} "
        f"(range {min(gt):.1f}–{max(gt):.1f}). Per-image rows: `{args.out.name}.csv`.",
        "",
        "    " + shlex.join(["python", "experiments/iterations_study.py", *args.argv]),
        "",
    ]
    return "\n".join(lines)


def study_config(
    args: argparse.Namespace, experiment: str, max_iter: int, overrides: list[str] = ()
) -> Any:
    """The run config of a study: the preset on the chosen split and subset, T = ``max_iter``."""
    return compose_config(
        "run",
        [
            f"+experiment={experiment}",
            f"dataset.root={args.root.resolve()}",
            f"dataset.split={args.split}",
            f"dataset.limit={args.limit or 'null'}",
            f"dataset.max_side={args.max_side or 'null'}",
            f"max_iter={max_iter}",
            *overrides,
        ],
    )


def local_metrics(config: Any) -> dict[str, Any]:
    """The run's metrics, scoring in this process only (no sync)."""
    metrics = {name: instantiate(config.metric[name]) for name in config.metric}
    for metric in metrics.values():
        metric.sync_on_compute = False
    return metrics


def pending(dataset: Any, csv_path: Path) -> Iterator[dict[str, Any]]:
    """The samples a study's CSV does not hold yet (a rerun skips the others)."""
    done = {row["id"] for row in read_rows(csv_path)} if csv_path.is_file() else set()
    for item_id in dataset.ids:
        if item_id not in done:
            yield dataset.load(item_id)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    study_arguments(parser)
    parser.add_argument("--experiment", default="bsd_fsf_cnn", help="preset under conf/experiment")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[0, 50, 100, 300, 1000])
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        help="per-image CSVs (table1.py's, or another study's: its last T) to pool over the "
        "same images, one row each",
    )
    parser.add_argument(
        "overrides", nargs="*", help="more Hydra overrides (key=value), before --compare"
    )
    return parse_keeping_argv(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    checkpoints = sorted(set(args.checkpoints))
    config = study_config(args, args.experiment, checkpoints[-1], args.overrides)
    segmenter = instantiate(config.segmenter)
    dataset = instantiate(config.dataset)
    metrics = local_metrics(config)
    csv_path = args.out.with_suffix(".csv")
    for sample in pending(dataset, csv_path):
        rows = study_image(config, segmenter, metrics, sample, checkpoints)
        append_rows(csv_path, rows)
        print(
            f"{sample['id']}: "
            + ", ".join(  # noqa: T201 - progress for the user
                f"T={row['t']} All {row['bsd500/all']:.3f}" for row in rows
            ),
            flush=True,
        )
    args.out.with_suffix(".md").write_text(report(args, read_rows(csv_path)))
    print(f"wrote {args.out.with_suffix('.md')}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
