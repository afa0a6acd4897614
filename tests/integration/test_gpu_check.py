"""The prepared GPU check cannot rot: its dry run (tiny settings, CPU) runs every step."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_gpu_check_dry_run_completes_every_step(tmp_path):
    out = tmp_path / "out"
    env = os.environ | {"DRY_RUN": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "experiments" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    names = [name for name, *_ in steps]
    assert names == [
        "tests",
        "smoke",
        "bench",
        *(f"table1_{p}" for p in ("bsd_default", "bsd_fsf_cnn", "bsd_scf_cnn", "bsd_fixed_cnn")),
    ]
    assert all(rc == "0" for _, rc, *_ in steps), steps
    summary = (out / "summary.md").read_text()
    for figure in ("seconds_per_iter_bf16_eager", "time_to_result_paper_s", "batched_ratio_B2"):
        assert figure in summary
    for preset in ("bsd_default", "bsd_fixed_cnn"):
        assert f"| {preset} | 2 |" in summary  # two images scored per preset
    with tarfile.open(out / "gpu_check.tar.gz") as archive:
        members = archive.getnames()
    assert "./bench.log" in members and any(m.endswith("smoke/3096.json") for m in members)
    assert len(list(out.iterdir())) <= 8  # what the device machine sends back
