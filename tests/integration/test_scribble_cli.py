"""``dynaseg segment --scribble`` and ``<stem>_scribble.png`` in folders, through both doors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dynaseg.cli import main
from dynaseg.losses import UNMARKED
from dynaseg.outputs import FLAT, RUN
from tests.synthetic import write_two_images

ROOT = Path(__file__).parents[2]
FAST = ["--max-iter", "4", "--stopping", "threshold", "--threshold", "0", "--quiet"]


def strokes(shape: tuple[int, int], classes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Two vertical strokes, near the left and the right edge."""
    scribble = np.full(shape, UNMARKED, dtype=np.uint8)
    scribble[5:-5, 3:5] = classes[0]
    scribble[5:-5, -5:-3] = classes[1]
    return scribble


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_two_images(folder)
    return folder


def test_one_image_with_its_strokes(folder, tmp_path):
    scribble = tmp_path / "marks.png"
    Image.fromarray(strokes((30, 41), (3, 7))).save(scribble)
    out = tmp_path / "out"
    image = str(folder / "good.png")
    assert main(["segment", image, "--scribble", str(scribble), "--out", str(out), *FAST]) == 0
    record = json.loads(FLAT.path(out, "record", "good").read_text())
    assert record["scribble"]["path"] == str(scribble)
    assert set(record["scribble"]["labels"]) == {"3", "7"}
    assert record["scribble"]["marked_pixels"] == int((strokes((30, 41)) != UNMARKED).sum())
    assert record["threshold"] == 0  # --threshold 0: no early stop, even with strokes
    labels = np.asarray(Image.open(FLAT.path(out, "labels", "good")))
    painted = np.asarray(Image.open(FLAT.path(out, "overlay", "good")))
    plain = np.asarray(Image.open(FLAT.path(out, "color", "good")))
    marked = strokes((30, 41)) != UNMARKED
    label_of_3 = record["scribble"]["labels"]["3"]
    on_stroke = painted[marked & (strokes((30, 41)) == 3)]
    assert (on_stroke == plain[labels == label_of_3][0]).all()  # drawn in its label's colour


def test_a_folder_takes_the_scribble_beside_each_image_and_reports_bad_ones(folder, tmp_path):
    Image.fromarray(strokes((30, 41))).save(folder / "good_scribble.png")
    Image.fromarray(strokes((10, 10))).save(folder / "tall_scribble.png")  # wrong aspect
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), *FAST]) == 1
    assert [FLAT.item_id(path) for path in FLAT.records(out)] == ["good"]
    assert "scribble" in json.loads(FLAT.path(out, "record", "good").read_text())
    (failure,) = list(csv.DictReader((out / "failures.csv").open()))
    assert failure["id"] == "tall"
    assert failure["error"].startswith(f"{folder / 'tall_scribble.png'}: the scribble is 10x10")

    run = tmp_path / "run"
    command = [sys.executable, "-m", "dynaseg.run", "dataset=folder", f"dataset.root={folder}"]
    overrides = ["max_iter=4", "stopping=threshold", "stopping.threshold=0"]
    subprocess.run(
        [*command, *overrides, f"hydra.run.dir={run}"], check=True, capture_output=True, cwd=ROOT
    )
    record = json.loads(RUN.path(run, "record", "good").read_text())
    assert record["scribble"]["labels"].keys() == {"0", "1"}
    assert list(csv.DictReader((run / "failures.csv").open())) == [failure]


@pytest.mark.parametrize(
    ("scribble", "message"),
    [
        (np.full((30, 41), UNMARKED, np.uint8), "marks no pixel"),
        (strokes((30, 41), (0, 120)), "class 120 is not below q = 100"),
        (np.dstack([strokes((30, 41))] * 2 + [np.zeros((30, 41), np.uint8)]), "colour image"),
    ],
)
def test_each_bad_scribble_fails_its_image_only(folder, tmp_path, scribble, message):
    Image.fromarray(scribble).save(folder / "good_scribble.png")
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), *FAST]) == 1
    assert [FLAT.item_id(path) for path in FLAT.records(out)] == ["tall"]
    (failure,) = list(csv.DictReader((out / "failures.csv").open()))
    assert failure["error"].startswith(str(folder / "good_scribble.png"))
    assert message in failure["error"]


def test_scribble_takes_one_image(folder, tmp_path, capsys):
    Image.fromarray(strokes((30, 41))).save(tmp_path / "s.png")
    with pytest.raises(SystemExit):
        main(["segment", str(folder), "--scribble", str(tmp_path / "s.png"), "--out", "o"])
    assert "--scribble takes one image, got 2" in capsys.readouterr().err
