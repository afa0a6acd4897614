"""``report.html``: one static page per run to look at rather than read.

Built from the files of a run directory alone (``python -m dynaseg.run``: ``records/``,
``per_image.csv``, ``metrics.json``, ``failures.csv``, ``config.yaml``, ``thumbnails/``,
``ground_truth/``, ``overlays/``, ``predictions/``) or of a ``dynaseg segment --out`` folder
(``<stem>.json`` and its images), so ``dynaseg report DIR`` can rebuild it at any time, also for a
run made before this page existed. The page is self-contained: no network, no CDN, images as files
beside it (relative links, so the folder can be copied anywhere), sortable by every column with a
few lines of plain JavaScript (the table reads in its written order without it; ``#sort=COLUMN``
or ``#sort=COLUMN:desc`` in the address opens it sorted). A folder holding
several runs (a multirun) gets an index page lining the runs up, one row each.
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from dynaseg.images import ImageReadError, load_image
from dynaseg.outputs import FLAT, RUN, atomic_write, colorize, save_thumbnail

REPORT = "report.html"
ASSETS = "report_files"
PROTOCOLS = {
    "bsd500": "BSDS500 best IoU per GT segment after a 4-connected split (Kim et al. 2020), "
    "pooled over GT segments; All / Fine / Coarse / Mean",
    "bsd500_regions": "BSDS500 region benchmark (Arbelaez et al. 2011): segmentation covering, "
    "probabilistic Rand index, variation of information (lower is better)",
    "voc2012": "PASCAL VOC 2012 best IoU per GT segment",
    "cocostuff27": "COCO-Stuff-27 mIoU after Hungarian matching",
}
FACT_COLUMNS = ("n_clusters", "iterations", "stop_reason", "seconds")
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const up = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach((h) => delete h.dataset.order);
    th.dataset.order = up ? "asc" : "desc";
    const key = (row) => row.cells[column].dataset.sort ?? row.cells[column].textContent;
    const rows = Array.from(body.rows);
    const numeric = rows.every((row) => key(row) === "" || !isNaN(Number(key(row))));
    rows.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return up ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
if (location.hash.startsWith("#sort=")) {  // a link to a sorted view: #sort=<column>[:desc]
  const [name, order] = decodeURIComponent(location.hash.slice(6)).split(":");
  const headers = Array.from(document.querySelectorAll("#images th"));
  const th = headers.find((h) => h.textContent === name);
  if (th) { th.click(); if (order === "desc") th.click(); }
}
"""
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; }
th[data-order="desc"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { width: 160px; height: auto; display: block; }
pre { background: #f7f7f7; padding: 0.8em; max-height: 24em; overflow: auto; }
.failed { color: #a00; }
.summary { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
.block h3 { margin: 0.2em 0; } .protocol { max-width: 22em; color: #555; margin: 0.2em 0; }
details { margin: 1em 0; }
"""


PICTURE_COLUMNS = ("image", "ground truth", "prediction")


def report_pictures(folder: Path, ids: list[str]) -> dict[str, list[Any]]:
    """Per image of a run, the report's three pictures as ``wandb.Image`` (None where absent),
    for the per-image table logged to W&B."""
    import wandb

    out = {}
    for item in ids:
        files = [RUN.path(folder, kind, item) for kind in ("thumbnail", "ground_truth", "overlay")]
        out[item] = [wandb.Image(str(path)) if path.is_file() else None for path in files]
    return out


def write_report(folder: Path) -> Path:
    """Write (or rewrite) ``folder/report.html`` from the folder's files; returns its path."""
    folder = Path(folder)
    if RUN.records(folder) or (folder / "metrics.json").is_file():
        page = _run_page(folder)
    elif FLAT.holds(folder) or (folder / "failures.csv").is_file():
        page = _cli_page(folder)
    elif find_runs([folder]):
        page = _index_page(folder)
    else:
        raise FileNotFoundError(f"{folder}: no run, segment output or runs to report on")
    path = folder / REPORT
    atomic_write(path, lambda handle: handle.write(page.encode()))
    return path


def _run_page(folder: Path) -> str:
    records = sorted(
        (json.loads(path.read_text()) for path in RUN.records(folder)),
        key=lambda r: str(r.get("id")),
    )
    metrics = _read_json(folder / "metrics.json")
    failures = _read_csv(folder / "failures.csv")
    score_keys = sorted({k for r in records for k in r if "/" in k and not _is_count(k)})
    rows = []
    for record in records:
        item = str(record["id"])
        colour = _colorized(folder, _relative(RUN, folder, "labels", item))  # viewable
        rows.append(
            {
                "id": item,
                "image": _first(folder, [_relative(RUN, folder, "thumbnail", item)]),
                "ground truth": _first(folder, [_relative(RUN, folder, "ground_truth", item)]),
                "prediction": _first(folder, [_relative(RUN, folder, "overlay", item)]) or colour,
                "full size": colour,
                "record": record,
            }
        )
    summary = [
        f'<div class="summary">{_scores_block(metrics)}'
        f"{_facts_block(metrics, len(records), failures)}</div>",
        _config_block(folder / "config.yaml"),
    ]
    return _page(f"dynaseg run: {folder.name}", summary, rows, score_keys, failures)


def _relative(layout: Any, folder: Path, kind: str, item: str) -> str:
    """The link from the page to one file of an image."""
    return layout.path(folder, kind, item).relative_to(folder).as_posix()


def _cli_records(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in FLAT.records(folder):
        item = FLAT.item_id(path)
        if item is not None and FLAT.path(folder, "labels", item).is_file():
            out.append((item, json.loads(path.read_text())))
    return out


def _cli_page(folder: Path) -> str:
    rows = []
    for stem, record in _cli_records(folder):
        rows.append(
            {
                "id": stem,
                "image": _input_thumbnail(folder, stem, record.get("input")),
                "ground truth": None,
                "prediction": _relative(FLAT, folder, "overlay", stem),
                "full size": _relative(FLAT, folder, "color", stem),
                "record": {"id": stem, **record},
            }
        )
    failures = _read_csv(folder / "failures.csv")
    settings = rows[0]["record"].get("settings", {}) if rows else {}
    summary = [
        _facts_block({}, len(rows), failures),
        "<details><summary>Settings</summary>"
        f"<pre>{html.escape(json.dumps(settings, indent=1))}</pre></details>",
    ]
    return _page(f"dynaseg segment: {folder.name}", summary, rows, [], failures)


def find_runs(paths: list[Path]) -> list[Path]:
    """Every folder at or below the given paths that holds a ``metrics.json``."""
    return sorted({p.parent for path in paths for p in Path(path).rglob("metrics.json")})


def run_overrides(run: Path) -> dict[str, str]:
    """The command-line overrides Hydra recorded for a run (``key=value`` → {key: value})."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    pairs = (str(item).split("=", 1) for item in yaml.safe_load(path.read_text()) or [])
    return {pair[0].lstrip("+~"): pair[1] for pair in pairs if len(pair) == 2}


def varied_keys(settings: list[dict[str, str]]) -> list[str]:
    """The override keys whose values differ between runs."""
    keys = sorted({key for setting in settings for key in setting})
    return [key for key in keys if len({setting.get(key) for setting in settings}) > 1]


def _index_page(folder: Path) -> str:
    runs = find_runs([folder])
    metrics = {run: _read_json(run / "metrics.json") for run in runs}
    overrides = {run: run_overrides(run) for run in runs}
    varied = varied_keys(list(overrides.values()))
    scores = sorted({k for m in metrics.values() for k in m if "/" in k and not _is_count(k)})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", *varied, *scores, "n_images"])
    body = []
    for run in runs:
        link = os.path.relpath(run / REPORT, folder)
        name = html.escape(str(run.relative_to(folder)))
        cells = [f'<td><a href="{html.escape(link)}">{name}</a></td>']
        cells += [f"<td>{html.escape(str(overrides[run].get(k, '')))}</td>" for k in varied]
        cells += [_number_cell(metrics[run].get(k)) for k in scores]
        cells.append(_number_cell(metrics[run].get("n_images")))
        body.append(f"<tr>{''.join(cells)}</tr>")
        if not (run / REPORT).is_file():
            write_report(run)
    table = (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    return _document(
        f"dynaseg runs: {folder.name}", f"<h1>Runs under {html.escape(folder.name)}</h1>{table}"
    )


def _page(
    title: str,
    summary: list[str],
    rows: list[dict[str, Any]],
    score_keys: list[str],
    failures: list[dict[str, str]],
) -> str:
    columns = ["id", "image", "ground truth", "prediction", *FACT_COLUMNS, *score_keys, "curves"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        record = row["record"]
        cells = [_link_cell(row["id"], row["full size"])]
        for key in ("image", "ground truth", "prediction"):
            cells.append(_image_cell(row[key]))
        for key in (*FACT_COLUMNS, *score_keys):
            cells.append(_number_cell(record.get(key)))
        cells.append(f"<td>{_curves(record.get('history'))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if failures:
        items = "".join(
            f"<li><b>{html.escape(f.get('id', ''))}</b>: {html.escape(f.get('error', ''))}</li>"
            for f in failures
        )
        summary.append(f'<h2 class="failed">Failures ({len(failures)})</h2><ul>{items}</ul>')
    table = (
        f'<table class="sortable" id="images"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    content = f"<h1>{html.escape(title)}</h1>{''.join(summary)}<h2>Images ({len(rows)})</h2>"
    return _document(title, content + "<p>Click a column to sort.</p>" + table)


def _document(title: str, content: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{content}<script>{SCRIPT}</script></body></html>\n"
    )


def _scores_block(metrics: dict[str, Any]) -> str:
    if not metrics:
        return ""
    groups: dict[str, list[str]] = {}
    for key, value in metrics.items():
        if "/" in key and not _is_count(key):
            name, measure = key.split("/", 1)
            groups.setdefault(name, []).append(
                f"<tr><td>{html.escape(measure)}</td>{_number_cell(value)}</tr>"
            )
    parts = []
    for name, lines in groups.items():
        protocol = PROTOCOLS.get(name, name)
        parts.append(
            f'<div class="block"><h3>{html.escape(name)}</h3>'
            f'<p class="protocol">{html.escape(protocol)}</p><table>{"".join(lines)}</table></div>'
        )
    return "".join(parts)


def _facts_block(metrics: dict[str, Any], n_rows: int, failures: list[dict[str, str]]) -> str:
    facts = {"images": metrics.get("n_images", n_rows), "failed": len(failures)}
    if "seconds" in metrics:
        facts["seconds"] = metrics["seconds"]
    cells = "".join(f"<tr><td>{k}</td>{_number_cell(v)}</tr>" for k, v in facts.items())
    return f'<div class="block"><h3>run</h3><table>{cells}</table></div>'


def _config_block(path: Path) -> str:
    if not path.is_file():
        return ""
    return (
        "<details><summary>Settings (resolved config)</summary>"
        f"<pre>{html.escape(path.read_text())}</pre></details>"
    )


def _curves(history: dict[str, list[float]] | None) -> str:
    """q' and μ over the iterations as an inline SVG (nothing without a history)."""
    if not history or not history.get("q"):
        return ""
    width, height = 180, 60
    lines = []
    for key, colour in (("q", "#1f77b4"), ("mu", "#d62728")):
        values = history.get(key) or []
        if not values:
            continue
        top, bottom = max(values), min(values)
        span = (top - bottom) or 1.0
        step = width / max(1, len(values) - 1)
        points = " ".join(
            f"{i * step:.1f},{height - (v - bottom) / span * height:.1f}"
            for i, v in enumerate(values)
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
        )
    label = f"q' {history['q'][0]:.0f}→{history['q'][-1]:.0f} (blue), μ (red)"
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
        f"<title>{html.escape(label)}</title>{''.join(lines)}</svg><br>{html.escape(label)}"
    )


def _image_cell(path: str | None) -> str:
    if path is None:
        return "<td></td>"
    link = html.escape(path)
    return f'<td><a href="{link}"><img src="{link}" alt="" loading="lazy"></a></td>'


def _link_cell(text: str, path: str | None) -> str:
    label = html.escape(text)
    if path is None:
        return f"<td>{label}</td>"
    return f'<td data-sort="{label}"><a href="{html.escape(path)}">{label}</a></td>'


def _number_cell(value: Any) -> str:
    if value is None or value == "":
        return '<td data-sort=""></td>'
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"<td>{html.escape(str(value))}</td>"
    text = f"{value:,.0f}" if isinstance(value, int) or value.is_integer() else f"{value:.4g}"
    return f'<td class="num" data-sort="{value!r}">{text}</td>'


def _first(folder: Path, candidates: list[str]) -> str | None:
    return next((c for c in candidates if (folder / c).is_file()), None)


def _colorized(folder: Path, relative: str) -> str | None:
    """A colour picture of a saved label map, written beside the report once."""
    source = folder / relative
    if not source.is_file():
        return None
    target = f"{ASSETS}/{source.stem}_color.png"
    if not (folder / target).is_file():
        with Image.open(source) as image:
            picture = colorize(np.asarray(image).astype(np.int64))
        atomic_write(folder / target, lambda h: Image.fromarray(picture).save(h, format="PNG"))
    return target


def _input_thumbnail(folder: Path, stem: str, source: str | None) -> str | None:
    """A thumbnail of a segmented input, if the input is still where it was."""
    target = f"{ASSETS}/{stem}.jpg"
    if (folder / target).is_file():
        return target
    if not source or not Path(source).is_file():
        return None
    try:
        save_thumbnail(folder / target, load_image(Path(source)))
    except ImageReadError:
        return None
    return target


def _is_count(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("n_")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
