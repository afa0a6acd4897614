"""Collect run directories (a Hydra multirun folder, or several runs) into one markdown table.

    python experiments/collect.py multirun/bsd500_scf_cnn/2026-11-25_10-00-00 [--out table.md]

One row per run, in the order of the varied setting; the columns are the overrides that differ
between runs, then the scores of ``metrics.json`` (counts and timings last), the layout of the
paper's tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynaseg.report import find_runs, run_overrides, varied_keys

FACTS = ("n_images", "n_failed", "seconds")


def sort_key(value: str) -> tuple[int, float | str]:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def table(runs: list[Path]) -> str:
    """The markdown table of these runs."""
    settings = [run_overrides(run) for run in runs]
    scores = [json.loads((run / "metrics.json").read_text()) for run in runs]
    keys = sorted({key for s in settings for key in s})
    varied = varied_keys(settings) or keys[:1]
    metric_keys = [k for k in dict.fromkeys(k for s in scores for k in s) if k not in FACTS]
    columns = [*varied, *metric_keys, *FACTS]
    rows = sorted(
        zip(settings, scores, strict=True),
        key=lambda pair: [sort_key(pair[0].get(key, "")) for key in varied],
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for setting, score in rows:
        cells = [setting.get(key, "") for key in varied]
        for key in [*metric_keys, *FACTS]:
            value = score.get(key, "")
            cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="multirun folders or run folders")
    parser.add_argument("--out", type=Path, help="write the table here as well")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        print(f"no metrics.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    text = table(runs)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
