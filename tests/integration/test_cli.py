import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dynaseg.cli import main
from tests.synthetic import write_two_images

FAST = ["--max-iter", "3", "--stopping", "threshold", "--threshold", "0", "--quiet"]


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    write_two_images(folder)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    good = (folder / "good.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[:60] + b"\x00" * 200)
    return folder


def test_every_output_is_written_at_the_input_size(inputs, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(inputs / "good.png"),
                str(inputs / "tall.jpg"),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    for stem, size in (("good", (30, 41)), ("tall", (41, 30))):
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert labels.shape == size
        for suffix in ("_color.png", "_overlay.png"):
            assert np.asarray(Image.open(out / f"{stem}{suffix}")).shape == (*size, 3)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["n_segments"] == len(np.unique(labels)) == labels.max() + 1
        assert record["iterations"] == 3 and record["stop_reason"] == "max_iter"
        assert set(record["history"]) == {"q", "mu", "loss_sim", "loss_con", "changed"}
        assert record["settings"]["segmenter"]["weighting"]["_target_"].endswith("FSFWeighting")


def test_max_side_downscales_for_the_fit_and_restores_the_size(inputs, tmp_path):
    out = tmp_path / "out"
    assert (
        main(["segment", str(inputs / "good.png"), "--out", str(out), "--max-side", "20", *FAST])
        == 0
    )
    record = json.loads((out / "good.json").read_text())
    assert record["processed_size"] == [15, 20] and record["size"] == [30, 41]
    assert np.asarray(Image.open(out / "good_labels.png")).shape == (30, 41)


def test_bad_files_are_reported_and_the_batch_goes_on(inputs, tmp_path, caplog):
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "--out", str(out), *FAST]) == 1
    assert sorted(p.name for p in out.glob("*.json")) == ["good.json", "tall.json"]
    log = caplog.text
    assert f"{inputs / 'empty.jpg'}: the file is empty" in log
    assert f"{inputs / 'notes.jpg'}: not a readable image" in log
    assert f"{inputs / 'corrupt.png'}: " in log
    assert "3 input(s) failed" in log
    assert not list(out.glob(".*tmp"))


def test_resume_skips_finished_images(inputs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    args = ["segment", str(inputs / "good.png"), "--out", str(out), *FAST]
    assert main(args) == 0
    before = (out / "good.json").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0
    assert (out / "good.json").stat().st_mtime_ns == before
    assert "skipped 1 already done" in caplog.text


def test_options_that_do_not_apply_are_refused(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(inputs), "--out", str(tmp_path), "--weighting", "fsf", "--mu", "3"])
    assert exit_info.value.code == 2
    assert "--mu does not apply to --weighting fsf" in capsys.readouterr().err


def test_module_entry_point_runs_in_a_subprocess(inputs, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "dynaseg",
        "segment",
        str(inputs / "good.png"),
        "--out",
        str(out),
    ]
    completed = subprocess.run([*command, *FAST], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "Segmented 1 image(s)" in completed.stderr
    assert (out / "good_labels.png").is_file()


def test_batched_images_match_the_one_at_a_time_outputs(inputs, tmp_path):
    for name in ("a", "b", "c"):
        (inputs / f"{name}.png").write_bytes((inputs / "good.png").read_bytes())
    files = [str(inputs / f"{name}.png") for name in ("a", "b", "c")] + [str(inputs / "tall.jpg")]
    one, many = tmp_path / "one", tmp_path / "many"
    exact = [*FAST, "--precision", "fp32"]  # bf16 kernels round differently batched
    assert main(["segment", *files, "--out", str(one), *exact]) == 0
    assert main(["segment", *files, "--out", str(many), "--batch-size", "2", *exact]) == 0
    for stem in ("a", "b", "c", "tall"):
        first = np.asarray(Image.open(one / f"{stem}_labels.png"))
        second = np.asarray(Image.open(many / f"{stem}_labels.png"))
        assert np.array_equal(first, second), (stem, (first == second).mean())
