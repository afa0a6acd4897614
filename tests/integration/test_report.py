"""report.html: right rows and scores, only local files, a browser renders and sorts it."""

import csv
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dynaseg.cli import main
from dynaseg.data import sample_root
from dynaseg.report import write_report

QUICK = ["+experiment=sample_fsf_cnn", "max_iter=3", "dataset.max_side=48", "dataset.limit=3"]


class Table(HTMLParser):
    """The images table of a report: header names, and per row each cell's sort key or text;
    plus every src/href the page references."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.references: list[str] = []
        self.inside = False
        self.cell: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.references += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "table" and attrs.get("id") == "images":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = attrs.get("data-sort")
            self.text = ""

    def handle_data(self, data):
        if self.cell is None and self.inside:
            self.text = getattr(self, "text", "") + data

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th"):
            value = self.cell if self.cell is not None else self.text.strip()
            self.rows[-1].append(value)
            self.cell = None

    @classmethod
    def of(cls, page: str) -> "Table":
        table = cls()
        table.feed(page)
        table.header, table.rows = table.rows[0], table.rows[1:]
        return table


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    done = subprocess.run(
        [sys.executable, "-m", "dynaseg.run", *QUICK, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_the_run_report_holds_every_image_with_its_scores(run_dir):
    page = (run_dir / "report.html").read_text()
    table = Table.of(page)
    with (run_dir / "per_image.csv").open(newline="") as handle:
        expected = {row["id"]: row for row in csv.DictReader(handle)}
    assert sorted(row[0] for row in table.rows) == sorted(expected)
    for column in ("bsd500/all", "bsd500_regions/covering", "iterations"):
        index = table.header.index(column)
        for row in table.rows:
            assert float(row[index]) == pytest.approx(float(expected[row[0]][column]), abs=1e-12)
    assert "http" not in page
    for reference in table.references:
        assert (run_dir / reference).is_file(), reference


def test_report_rebuilds_from_the_files_alone_also_for_an_older_run(run_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    for folder in ("thumbnails", "ground_truth", "overlays"):
        shutil.rmtree(old / folder)
    (old / "report.html").unlink()
    assert main(["report", str(old)]) == 0
    table = Table.of((old / "report.html").read_text())
    assert len(table.rows) == 3
    assert all((old / r).is_file() for r in table.references)  # colour pictures made anew


def test_segment_folder_report_lists_images_and_failures(tmp_path):
    out = tmp_path / "out"
    images = sample_root() / "images" / "val"
    status = main(
        [
            "segment",
            str(images / "3096.jpg"),
            str(tmp_path / "missing.jpg"),
            "--out",
            str(out),
            "--max-side",
            "40",
            "--max-iter",
            "3",
            "--quiet",
        ]
    )
    assert status == 1
    page = (out / "report.html").read_text()
    table = Table.of(page)
    assert [row[0] for row in table.rows] == ["3096"]
    assert "missing.jpg" in page and "Failures (1)" in page
    assert all((out / r).is_file() for r in table.references)
    record = json.loads((out / "3096.json").read_text())
    assert table.rows[0][table.header.index("iterations")] == repr(record["iterations"])


def test_a_folder_of_runs_gets_an_index_lining_them_up(run_dir, tmp_path):
    for alpha in ("10", "15"):
        run = tmp_path / "sweep" / alpha
        shutil.copytree(run_dir, run)
        (run / ".hydra").mkdir(exist_ok=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- weighting.alpha={alpha}\n")
    page = write_report(tmp_path / "sweep").read_text()
    assert "weighting.alpha" in page and 'href="10/report.html"' in page
    assert (tmp_path / "sweep" / "15" / "report.html").is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")
def test_a_browser_renders_the_report_and_sorting_reorders_rows(run_dir, tmp_path):
    url = (run_dir / "report.html").as_uri()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]

    def dom(fragment: str) -> tuple[Table, str]:
        done = subprocess.run(
            [CHROMIUM, *flags, "--dump-dom", url + fragment],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return Table.of(done.stdout), done.stderr

    column = "bsd500/all"
    up, log = dom(f"#sort={column}")
    down, _ = dom(f"#sort={column}:desc")
    assert "Uncaught" not in log and "SyntaxError" not in log, log[-2000:]
    index = up.header.index(column)
    scores = [float(row[index]) for row in up.rows]
    assert scores == sorted(scores)
    assert [row[0] for row in down.rows] == [row[0] for row in reversed(up.rows)]
    written = Table.of((run_dir / "report.html").read_text()).rows
    expected = [row[0] for row in sorted(written, key=lambda row: float(row[index]))]
    assert [row[0] for row in up.rows] == expected
    assert [row[0] for row in written] != expected, "pick a column the written order does not sort"
