"""Fit once against per-image fits on BSDS500: quality and time per image, and the forward pass.

    python experiments/fit_once_study.py --root ../shared/data/BSDS500/data --fit-limit 20 \
        --limit 10 --out experiments/results/fit_once_val10

1. ``dynaseg fit`` on the first ``--fit-limit`` images of ``--fit-split`` (train): one network,
   the DynaSeg loss over random crops, saved to ``<out>/model.safetensors``.
2. ``python -m dynaseg.run +experiment=bsd_default model=<that file>`` on the first ``--limit``
   images of ``--split`` (val): one forward pass per image.
3. The same run without ``model``: our default per-image fit.
4. ``<out>.md``: the scores of both runs side by side, the seconds per image, and the forward
   pass alone timed on one native image (median of 5; the issue's bound is 1 s on 2 cores).

Every step is resumable: the model is kept once saved, and the runs resume (``resume=true``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hydra.utils import instantiate

from dynaseg.config import compose_config
from dynaseg.data import BSDS500
from dynaseg.reuse import ModelSegmenter, read_model

KEYS = (
    "bsd500/all",
    "bsd500/fine",
    "bsd500/coarse",
    "bsd500/mean",
    "bsd500_regions/covering",
    "bsd500_regions/pri",
    "bsd500_regions/voi",
    "bsd500/segments_per_image",
)


def run(command: list[str]) -> None:
    print("$", shlex.join(command), file=sys.stderr)  # noqa: T201 - what runs
    subprocess.run(command, check=True)


def segment_run(args: argparse.Namespace, name: str, *overrides: str) -> Path:
    """A resumable framework run over the evaluation images."""
    folder = args.out / name
    resume = ["resume=true"] if (folder / "config.yaml").is_file() else []
    run(
        [
            sys.executable,
            "-m",
            "dynaseg.run",
            "+experiment=bsd_default",
            f"dataset.root={args.root}",
            f"dataset.split={args.split}",
            f"dataset.limit={args.limit}",
            f"hydra.run.dir={folder}",
            *overrides,
            *resume,
        ]
    )
    return folder


def seconds_per_image(folder: Path) -> float:
    records = [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]
    return statistics.median(record["seconds"] for record in records)


def forward_seconds(model: Path, root: Path, split: str) -> float:
    """Median wall time of one forward pass on the first native image of the split."""
    config = compose_config("segment")
    _, settings = read_model(model)
    labeller = ModelSegmenter.from_file(instantiate(config.segmenter), model, settings)
    sample = BSDS500(root, split=split, limit=1)[0]
    labeller.label(sample["image"])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        labeller.label(sample["image"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--fit-split", default="train")
    parser.add_argument("--fit-limit", type=int, default=20)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "model.safetensors"
    fit_seconds = None
    if not model.is_file():
        images = sorted((args.root / "images" / args.fit_split).glob("*.jpg"))[: args.fit_limit]
        start = time.perf_counter()
        command = [sys.executable, "-m", "dynaseg", "fit", *map(str, images), "--save", str(model)]
        run([*command, "--iterations", str(args.iterations), "--quiet"])
        fit_seconds = time.perf_counter() - start
        (args.out / "fit_seconds.txt").write_text(f"{fit_seconds:.1f}\n")
    elif (args.out / "fit_seconds.txt").is_file():
        fit_seconds = float((args.out / "fit_seconds.txt").read_text())
    once = segment_run(args, "fit_once", f"model={model.resolve()}")
    each = segment_run(args, "per_image")
    scores = {
        name: json.loads((folder / "metrics.json").read_text())
        for name, folder in (("fit once", once), ("per-image fit (default)", each))
    }
    forward = forward_seconds(model, args.root, args.split)
    lines = [
        f"# Fit once vs per-image fits: BSDS500 {args.split}, first {args.limit} images, "
        "native size",
        "",
        f"One network fitted on the first {args.fit_limit} {args.fit_split} images "
        f"({args.iterations} updates of 4 random 160×160 crops"
        + (f", {fit_seconds:.0f} s" if fit_seconds else "")
        + "), then one forward pass per image, against our default per-image fit. Seconds: "
        "median per image from the records (the fit's wall time; 2 CPU cores).",
        "",
        "| method | All | Fine | Coarse | Mean | covering | PRI | VoI | segments / image | "
        "seconds / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, values), folder in zip(scores.items(), (once, each), strict=True):
        cells = [f"{values[key]:.3f}" for key in KEYS[:-1]] + [f"{values[KEYS[-1]]:.0f}"]
        lines.append(f"| {name} | {' | '.join(cells)} | {seconds_per_image(folder):.2f} |")
    lines += [
        "",
        f"Forward pass alone on one native image (`ModelSegmenter.label`, median of 5): "
        f"{forward:.3f} s.",
        "",
        "    python experiments/fit_once_study.py " + shlex.join(sys.argv[1:]),
        "",
    ]
    text = "\n".join(lines)
    Path(f"{args.out}.md").write_text(text)
    print(text)  # noqa: T201 - the table


if __name__ == "__main__":
    main()
