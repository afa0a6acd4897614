"""The summary table of ``gpu_check.sh``: its steps, the benchmark's figures, the Table 1 rows.

    python experiments/gpu_summary.py WORK_DIR > summary.md

Reads what the check left in WORK_DIR: ``steps.tsv`` (name, exit status, seconds, limit),
``bench.log`` (its last line is the benchmark's JSON object) and ``table1/<preset>/records/``
(one JSON record per finished image, so a run cut off by its time limit still counts the images
it finished; best IoU is pooled over GT segments as in ``tables.pool``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tables import HEADER, cells, markdown, pool


def bench_figures(work: Path) -> dict[str, object]:
    """The benchmark's JSON object (empty when the step failed before printing it)."""
    log = work / "bench.log"
    for line in reversed(log.read_text().splitlines() if log.is_file() else []):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def table_rows(work: Path) -> list[list[str]]:
    """One pooled row per Table 1 preset that finished at least one image."""
    rows = []
    for run in sorted((work / "table1").glob("*")):
        records = [json.loads(p.read_text()) for p in sorted((run / "records").glob("*.json"))]
        records = [r for r in records if "bsd500/all" in r]
        if not records:
            continue
        iterations = sorted(r["iterations"] for r in records)
        seconds = sorted(r["seconds"] for r in records)
        rows.append(
            [
                run.name,
                str(len(records)),
                str(iterations[len(iterations) // 2]),
                f"{seconds[len(seconds) // 2]:.1f}",
                *cells(pool(records)),
            ]
        )
    return rows


def main(work: Path) -> str:
    steps = [line.split("\t") for line in (work / "steps.tsv").read_text().splitlines() if line]
    lines = ["# GPU check", "", markdown(["step", "exit", "seconds", "limit"], [], steps)]
    figures = bench_figures(work)
    if figures:
        lines += ["## Benchmark", "", markdown(["figure", "value"], [], figures_rows(figures))]
    rows = table_rows(work)
    if rows:
        lines += [
            "## Table 1, BSDS500 val, native size",
            "",
            markdown(["preset", "images", "median iterations", "median s"], HEADER, rows),
        ]
    return "\n".join(lines)


def figures_rows(figures: dict[str, object]) -> list[list[str]]:
    return [[key, str(value)] for key, value in figures.items()]


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))  # noqa: T201
