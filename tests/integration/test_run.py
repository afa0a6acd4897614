"""The experiment runner end to end, in real subprocesses (as a user runs it)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dynaseg.data import BSDS500, sample_root

QUICK = ["+experiment=sample_fsf_cnn", "max_iter=3", "dataset.max_side=48", "dataset.limit=3"]
ROOT = Path(__file__).parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "dynaseg.run", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_experiment_runs_on_the_samples_and_writes_the_run_files(tmp_path):
    out = tmp_path / "run"
    completed = run(*QUICK, f"hydra.run.dir={out}")
    scores = json.loads((out / "metrics.json").read_text())
    for key in ("bsd500/all", "bsd500/fine", "bsd500/coarse", "bsd500/mean"):
        assert 0.0 < scores[key] < 1.0
    assert scores["bsd500/mean"] == pytest.approx(
        (scores["bsd500/all"] + scores["bsd500/fine"] + scores["bsd500/coarse"]) / 3
    )
    assert scores["n_images"] == 3 and scores["n_failed"] == 0
    assert '"bsd500/all"' in completed.stdout
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    dataset = BSDS500(sample_root(), split="val", limit=3)
    assert [row["id"] for row in rows] == dataset.ids
    for row, sample in zip(rows, dataset, strict=True):
        prediction = np.asarray(Image.open(out / "predictions" / f"{row['id']}.png"))
        assert prediction.shape == tuple(sample["size"])
        assert int(row["n_segments"]) == len(np.unique(prediction))
        assert row["stop_reason"] in ("threshold", "max_iter")
        assert 0.0 < float(row["bsd500/all"]) <= 1.0
    assert "max_iter: 3" in (out / "config.yaml").read_text()


def test_multirun_over_alpha_and_the_collected_table(tmp_path):
    sweep = tmp_path / "sweep"
    run("-m", *QUICK, "dataset.limit=1", "weighting.alpha=10,20", f"hydra.sweep.dir={sweep}")
    runs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert len(runs) == 2
    table = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "collect.py"), str(sweep)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert table[0].startswith("| weighting.alpha | bsd500/all |")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["10", "20"]


def test_two_ddp_processes_give_the_same_scores_and_predictions_as_one(tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    exact = [*QUICK, "precision=fp32"]  # bf16 kernels round differently with fewer threads
    run(*exact, f"hydra.run.dir={single}")
    run(*exact, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={double}")
    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((double / "metrics.json").read_text())
    one.pop("seconds"), two.pop("seconds")
    assert one == two
    for path in sorted((single / "predictions").glob("*.png")):
        assert np.array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(double / "predictions" / path.name))
        )
    assert (single / "per_image.csv").read_text() != ""


def test_wandb_logger_runs_offline_without_a_key(tmp_path):
    out = tmp_path / "run"
    env = {"WANDB_API_KEY": "", "WANDB_MODE": "", "HOME": str(tmp_path), "WANDB_SILENT": "true"}
    run(*QUICK, "dataset.limit=1", "logger=wandb", f"hydra.run.dir={out}", env=env)
    assert list((out / "wandb").glob("offline-run-*"))
    assert (out / "metrics.json").is_file()
    (table,) = (out / "wandb").glob("offline-run-*/files/media/table/per_image_*.table.json")
    logged = json.loads(table.read_text())
    row = dict(zip(logged["columns"], logged["data"][0], strict=True))
    assert [row[key] for key in ("image", "ground truth", "prediction")] == ["Image"] * 3


def test_batched_steps_give_the_same_predictions(tmp_path):
    one, batched = tmp_path / "one", tmp_path / "batched"
    folder = tmp_path / "images"
    folder.mkdir()
    for item in BSDS500(sample_root(), split="val", limit=3):
        image = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(image[:60, :60]).save(folder / f"{item['id']}.png")
    common = [*QUICK, "precision=fp32", "dataset=folder", f"dataset.root={folder}"]
    run(*common, f"hydra.run.dir={one}")
    run(*common, "batch_size=2", f"hydra.run.dir={batched}")
    names = sorted(p.name for p in (one / "predictions").glob("*.png"))
    assert len(names) == 3
    for name in names:
        assert np.array_equal(
            np.asarray(Image.open(one / "predictions" / name)),
            np.asarray(Image.open(batched / "predictions" / name)),
        )
