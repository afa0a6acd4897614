"""``dynaseg fit``, ``segment --model/--refine/--warm-start`` and ``model=`` in the framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from dynaseg.cli import main
from dynaseg.engine import Segmenter
from dynaseg.outputs import FLAT, RUN
from dynaseg.reuse import save_model
from tests.synthetic import write_two_images

ROOT = Path(__file__).parents[2]
QUICK_FIT = ["--iterations", "3", "--crop", "16", "--batch", "2", "--quiet"]


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    write_two_images(folder)
    path = tmp_path / "m.safetensors"
    assert main(["fit", str(folder), "--save", str(path), *QUICK_FIT]) == 0
    return folder, path


def test_a_fitted_model_labels_new_images_with_a_forward_pass(model, tmp_path):
    folder, path = model
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--model", str(path), "--out", str(out), "--quiet"]) == 0
    record = json.loads(FLAT.path(out, "record", "good").read_text())
    assert record["stop_reason"] == "model" and record["iterations"] == 0
    assert record["settings"]["model"]["path"] == str(path)
    assert len(record["settings"]["model"]["sha256"]) == 64
    labels = np.asarray(Image.open(FLAT.path(out, "labels", "good")))
    assert labels.shape == (30, 41) and record["n_clusters"] == len(np.unique(labels))
    refined = tmp_path / "refined"
    command = ["segment", str(folder / "good.png"), "--model", str(path), "--refine", "2"]
    assert main([*command, "--out", str(refined), "--quiet"]) == 0
    assert json.loads(FLAT.path(refined, "record", "good").read_text())["iterations"] == 2


def test_a_model_of_other_settings_or_no_model_is_refused_before_any_work(model, tmp_path, capsys):
    folder, path = model
    out = tmp_path / "out"
    saved = json.loads(safe_open(str(path), "pt").metadata()["settings"])
    saved["segmenter"]["n_clusters"] = 16
    other = tmp_path / "q16.safetensors"
    save_model(other, Segmenter(n_clusters=16).build_network(0), saved)
    (tmp_path / "junk.safetensors").write_text("junk")
    for bad, message in (
        (other, "fitted with other settings (n_clusters"),
        (tmp_path / "junk.safetensors", "not a dynaseg model"),
        (tmp_path / "missing.safetensors", "no such file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["segment", str(folder), "--model", str(bad), "--out", str(out)])
        assert exit_info.value.code == 2
        assert str(bad) in (err := capsys.readouterr().err) and message in err
    assert not out.exists()


def test_the_framework_labels_a_dataset_with_the_model(model, tmp_path):
    folder, path = model
    run = tmp_path / "run"
    command = [sys.executable, "-m", "dynaseg.run", "dataset=folder", f"dataset.root={folder}"]
    subprocess.run(
        [*command, f"model={path}", f"hydra.run.dir={run}"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    record = json.loads(RUN.path(run, "record", "good").read_text())
    assert record["stop_reason"] == "model"


def test_warm_started_frames_run_in_order_and_say_so(tmp_path):
    folder = tmp_path / "frames"
    write_two_images(folder, "tall.png")
    out = tmp_path / "out"
    fast = ["--max-iter", "3", "--quiet"]
    assert main(["segment", str(folder), "--warm-start", "--out", str(out), *fast]) == 0
    records = [json.loads(path.read_text()) for path in FLAT.records(out)]
    assert len(records) == 2 and all(r["settings"]["warm_start"] for r in records)


def test_a_run_can_fit_on_one_set_of_images_and_label_another(model, tmp_path):
    folder, _ = model
    run = tmp_path / "run"
    command = [sys.executable, "-m", "dynaseg.run", "dataset=folder", f"dataset.root={folder}"]
    shared = ["fit_shared.iterations=3", "fit_shared.crop=16", "fit_shared.batch=2"]
    subprocess.run(
        [*command, f"fit_on=[{folder / 'good.png'}]", *shared, f"hydra.run.dir={run}"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    for item in ("good", "tall"):
        record = json.loads(RUN.path(run, "record", item).read_text())
        assert record["stop_reason"] == "model"
        assert record["settings"]["fit_on"] == [str(folder / "good.png")]
