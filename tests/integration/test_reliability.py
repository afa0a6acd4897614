"""Reliability of ``python -m dynaseg.run`` (issue #6), in real subprocesses, as a user runs it.

* A run killed with SIGKILL mid-way and resumed gives the same predictions and metrics.json as an
  uninterrupted run, and no partial file is ever left under a final name.
* Bad inputs in a folder that also has good images: each is one line in failures.csv naming the
  file and the cause, and the run goes on; ``strict=true`` stops at the first one.
* Config mistakes: one line, exit status 2, before any compute (the cases themselves are in
  tests/unit/test_validation.py).
* Two runs with the same seed give identical predictions on CPU.

Covered elsewhere, not repeated here: 1 vs 2 DDP processes give the same predictions and metrics
(tests/integration/test_run.py::test_two_ddp_processes_give_the_same_scores_and_predictions_as_one);
the metrics' properties, i.e. random label maps score in [0, 1], a perfect prediction scores 1,
and permuting the predicted ids changes nothing (tests/unit/test_metrics.py::test_properties).
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from PIL import Image

from dynaseg.engine import Segmenter
from tests.synthetic import kill_when, region_image

ROOT = Path(__file__).parents[2]
# One thread per run: steadier timings on a shared 2-core machine; every run here uses it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 4 bundled images, each fit a fixed 30 iterations (no early stop) on a 48-pixel-wide input.
SAMPLE = [
    "dataset=sample",
    "dataset.max_side=48",
    "stopping=threshold",
    "stopping.threshold=0",
    "max_iter=30",
    "save_overlays=1",
]
OUR_FILES = ("config.yaml", "per_image.csv", "failures.csv", "metrics.json")
OUR_FOLDERS = ("predictions", "overlays", "records")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dynaseg.run", *args]


def run(*args: str, expect: int = 0) -> str:
    """Run to the end with this exit status; returns what it printed (Hydra logs to stdout)."""
    completed = subprocess.run(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=ENV,
    )
    assert completed.returncode == expect, completed.stdout[-3000:]
    return completed.stdout


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    return {
        path.stem: np.asarray(Image.open(path))
        for path in sorted((run_dir / "predictions").glob("*.png"))
    }


def scores(run_dir: Path) -> dict[str, Any]:
    """metrics.json without its timing."""
    values = json.loads((run_dir / "metrics.json").read_text())
    values.pop("seconds")
    return values


def per_image(run_dir: Path) -> list[dict[str, str]]:
    """per_image.csv without its timing."""
    rows = list(csv.DictReader((run_dir / "per_image.csv").open()))
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def assert_no_partial_files(run_dir: Path) -> None:
    """Every file of the run under a final name is complete (temporaries start with a dot)."""
    paths = [run_dir / name for name in OUR_FILES]
    paths += [path for folder in OUR_FOLDERS for path in (run_dir / folder).glob("*")]
    for path in paths:
        if not path.exists() or path.name.startswith("."):
            continue
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text())
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.open()))
            assert rows and all(len(row) == len(rows[0]) for row in rows), path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run over the samples."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run(*SAMPLE, f"hydra.run.dir={out}")
    return out


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_results(reference, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        command(*SAMPLE, f"hydra.run.dir={out}"),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when(process, lambda: bool(list((out / "records").glob("*.json"))))
    done = {path.name: path.read_bytes() for path in (out / "records").glob("*.json")}
    assert 1 <= len(done) < 4 and not (out / "metrics.json").exists()
    assert_no_partial_files(out)

    refused = run(*SAMPLE, f"hydra.run.dir={out}", expect=2)
    assert "add resume=true" in refused
    run(*SAMPLE, f"hydra.run.dir={out}", "resume=true")

    assert scores(out) == scores(reference)
    assert per_image(out) == per_image(reference)
    ours, theirs = predictions(out), predictions(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 4
    for item_id, labels in theirs.items():
        np.testing.assert_array_equal(ours[item_id], labels)
    for name, content in done.items():  # read back, not fitted again
        assert (out / "records" / name).read_bytes() == content
    assert_no_partial_files(out)
    assert not [path for path in out.rglob("*.tmp") if path.parts[-2] in OUR_FOLDERS]


@pytest.mark.slow
def test_the_same_seed_gives_identical_predictions_on_cpu(reference, tmp_path):
    run(*SAMPLE, f"hydra.run.dir={tmp_path / 'again'}")
    again, first = predictions(tmp_path / "again"), predictions(reference)
    assert again.keys() == first.keys() and len(first) == 4
    for item_id, labels in first.items():
        np.testing.assert_array_equal(again[item_id], labels)
    assert scores(tmp_path / "again") == scores(reference)


class DivergingSegmenter(Segmenter):
    """A Segmenter whose optimiser blows up on images ``diverge_width`` pixels wide.

    Selected with ``segmenter._target_`` so that one image of a real run meets a non-finite loss,
    detected by the engine itself.
    """

    def __init__(self, diverge_width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.diverge_width = diverge_width

    def fit_many(self, images, seeds, *args, **kwargs):
        if images[0].shape[-1] != self.diverge_width:
            return super().fit_many(images, seeds, *args, **kwargs)
        steady, self.optimizer = self.optimizer, partial(torch.optim.SGD, lr=1e30)
        try:
            return super().fit_many(images, seeds, *args, **kwargs)
        finally:
            self.optimizer = steady


def jpeg_bytes(array: np.ndarray) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side × side pixels whose zeros compress ~1000:1 (a few dozen KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def ground_truth(h: int, w: int) -> bytes | np.ndarray:
    regions = np.ones((h, w), np.uint16)
    regions[:, w // 2 :] = 2
    return regions


def write_item(root: Path, item_id: str, image: bytes, gt: np.ndarray | bytes | None) -> None:
    """One BSDS500-layout item: images/val/<id>.jpg and groundTruth/val/<id>.mat (no .mat for
    ``gt=None``)."""
    (root / "images" / "val").mkdir(parents=True, exist_ok=True)
    (root / "groundTruth" / "val").mkdir(parents=True, exist_ok=True)
    (root / "images" / "val" / f"{item_id}.jpg").write_bytes(image)
    mat = root / "groundTruth" / "val" / f"{item_id}.mat"
    if gt is None:
        return
    if isinstance(gt, bytes):
        mat.write_bytes(gt)
        return
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {"Segmentation": gt, "Boundaries": np.zeros(gt.shape, np.uint8)}
    scipy.io.savemat(mat, {"groundTruth": cells})


def good_image(h: int, w: int, seed: int) -> np.ndarray:
    regions = np.zeros((h, w), np.int64)
    regions[:, w // 2 :] = 1
    return region_image(regions, [(200, 40, 40), (40, 170, 60)], 10.0, seed)


# id → what its failure line must say after the file's path; None: segmented like any image.
BAD_INPUTS: dict[str, str | None] = {
    "good_a": None,
    "good_b": None,
    "two_by_two": None,  # the smallest image read: segmented
    "one_by_one": r"one_by_one\.jpg: image of 1x1 pixels is too small",
    "empty": r"empty\.jpg: the file is empty",
    "text": r"text\.jpg: not a readable image",
    "truncated": r"truncated\.jpg: cannot decode the image \(image file is truncated",
    "bomb": r"bomb\.jpg: refused as a decompression bomb",
    "huge": r"huge\.jpg: the model input is 100x80 = 8,000 pixels, above max_pixels=5,000.*"
    r"dataset\.max_side",
    "gt_unreadable": r"gt_unreadable\.mat: cannot read MATLAB file",
    "gt_missing": r"gt_missing\.mat: ground truth missing",
    "gt_wrong_size": r"gt_wrong_size\.mat: ground truth is 20x20 \(HxW\) but the image .*30x40",
    "diverges": r"diverges\.jpg: non-finite loss at iteration \d+; image skipped",
}
BAD_RUN = [
    "dataset=bsd500",
    "dataset.split=val",
    "max_pixels=5000",
    "stopping=threshold",
    "stopping.threshold=0",
    "max_iter=5",
    f"segmenter._target_={__name__}.DivergingSegmenter",
    "+segmenter.diverge_width=37",
]


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BSDS500-layout folder: three usable images and every kind of bad input."""
    root = tmp_path_factory.mktemp("bad") / "BSDS500"
    good = jpeg_bytes(good_image(30, 40, 0))
    write_item(root, "good_a", good, ground_truth(30, 40))
    write_item(root, "good_b", jpeg_bytes(good_image(30, 40, 1)), ground_truth(30, 40))
    write_item(root, "two_by_two", jpeg_bytes(good_image(2, 2, 2)), ground_truth(2, 2))
    write_item(root, "one_by_one", jpeg_bytes(good_image(1, 1, 3)), ground_truth(1, 1))
    write_item(root, "empty", b"", ground_truth(30, 40))
    write_item(root, "text", b"this is a text file, not a photo\n", ground_truth(30, 40))
    write_item(root, "truncated", good[: len(good) // 2], ground_truth(30, 40))
    write_item(root, "bomb", png_bomb(20_000), ground_truth(30, 40))
    write_item(root, "huge", jpeg_bytes(good_image(80, 100, 4)), ground_truth(80, 100))
    write_item(root, "gt_unreadable", good, b"MATLAB 5.0 MAT-file, cut short")
    write_item(root, "gt_wrong_size", good, ground_truth(20, 20))
    write_item(root, "gt_missing", good, None)
    write_item(root, "diverges", jpeg_bytes(good_image(30, 37, 5)), ground_truth(30, 37))
    return root


@pytest.mark.slow
def test_bad_inputs_are_listed_and_the_run_goes_on(bad_root, tmp_path):
    out = tmp_path / "run"
    output = run(*BAD_RUN, f"dataset.root={bad_root}", f"hydra.run.dir={out}")
    failures = {row["id"]: row["error"] for row in csv.DictReader((out / "failures.csv").open())}
    expected = {key: value for key, value in BAD_INPUTS.items() if value is not None}
    assert failures.keys() == expected.keys()
    for item_id, pattern in expected.items():
        line = failures[item_id]
        assert "\n" not in line
        assert line.startswith(str(bad_root)), line  # names the file, by its full path
        assert re.search(pattern, line), line
        assert line in output  # logged as it happens, too
    done = sorted(key for key, value in BAD_INPUTS.items() if value is None)
    assert sorted(predictions(out)) == done
    assert [row["id"] for row in per_image(out)] == done
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_images"] == 3 and result["n_failed"] == len(expected)
    assert 0.0 < result["bsd500/all"] <= 1.0
    assert "image(s) failed and were skipped" in output


@pytest.mark.slow
def test_strict_stops_at_the_first_bad_input(bad_root, tmp_path):
    out = tmp_path / "run"
    output = run(
        *BAD_RUN, f"dataset.root={bad_root}", f"hydra.run.dir={out}", "strict=true", expect=1
    )
    first = sorted(BAD_INPUTS)[0]
    assert first == "bomb"
    assert "stopped at the first failed image (strict=true)" in output
    assert "Traceback" not in output
    rows = list(csv.DictReader((out / "failures.csv").open()))
    assert [row["id"] for row in rows] == [first]
    assert re.search(BAD_INPUTS[first], rows[0]["error"])
    assert not (out / "metrics.json").exists() and not predictions(out)


@pytest.mark.slow
def test_config_mistakes_stop_before_any_compute(tmp_path):
    out = tmp_path / "run"
    output = run("weighting.alpha=0", f"hydra.run.dir={out}", expect=2)
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "config error: weighting: alpha must be > 0" in errors[0]
    assert "Traceback" not in output and not (out / "predictions").exists()


def test_nothing_is_unpickled():
    """Safe loading: no pickle in the package; torch.load only with weights_only=True."""
    for path in sorted((ROOT / "dynaseg").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) (c?pickle|dill|joblib)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
