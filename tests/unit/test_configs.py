import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from dynaseg.config import compose_config, config_dir, options, run_name
from dynaseg.engine import Segmenter
from dynaseg.validation import used_parts

EXPERIMENTS = options("experiment")


def test_every_config_group_has_its_options():
    assert options("weighting") == ["fixed", "fsf", "scf"]
    assert options("stopping") == ["silhouette", "threshold"]
    assert {"bsd500", "voc2012", "cocostuff27", "folder", "sample"} <= set(options("dataset"))
    assert {"csv", "wandb"} <= set(options("logger"))
    assert {"cpu", "gpu", "ddp"} <= set(options("trainer"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds_its_method(name, tmp_path):
    config = compose_config("run", [f"+experiment={name}", f"dataset.root={tmp_path}"])
    segmenter = instantiate(config.segmenter)
    assert isinstance(segmenter, Segmenter)
    first_line = (config_dir() / "experiment" / f"{name}.yaml").read_text().splitlines()[1]
    assert first_line.startswith("# "), "each preset names the table it reproduces"
    for metric in config.metric.values():
        instantiate(metric)


@pytest.mark.parametrize(
    ("name", "weighting", "value"),
    [("bsd_fsf_cnn", "FSFWeighting", 15.0), ("bsd_scf_cnn", "SCFWeighting", 50.0)],
)
def test_presets_carry_the_paper_settings(name, weighting, value):
    config = compose_config("run", [f"+experiment={name}"])
    assert config.weighting._target_.endswith(weighting) and config.weighting.alpha == value
    assert config.max_iter == 1000 and config.segmenter.optimizer.lr == 0.1


def test_metric_follows_the_dataset():
    assert "coco_image" in compose_config("run", ["dataset=cocostuff27"]).metric
    assert "bsd500" in compose_config("run", ["dataset=bsd500"]).metric
    assert not compose_config("run", ["dataset=folder"]).metric


@pytest.mark.slow
def test_the_wheel_carries_the_configs_and_the_samples(tmp_path):
    """A user's ``pip install`` has no source checkout: the configs and samples must be inside."""
    root = Path(__file__).parents[2]
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*command, "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("dynaseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = root / "conf"
    configs = {f"dynaseg/conf/{path.relative_to(conf)}" for path in conf.rglob("*.yaml")}
    assert configs and configs <= names
    assert "dynaseg/samples/BSDS500/images/val/3096.jpg" in names


def test_a_baseline_run_is_named_and_checked_without_the_dynaseg_parts():
    config = compose_config("run", ["method=kmeans"], return_hydra_config=True)
    assert used_parts(config) == []
    assert used_parts(compose_config("run")) == ["backbone", "weighting", "stopping"]
    # Outside @hydra.main the ${hydra:...} choices are not resolvable: name the parts directly.
    assert run_name("bsd500", "kmeans", "fsf", "cnn") == "bsd500_kmeans"


def test_ddp_processes_wait_for_each_other_longer_than_one_native_shard_takes():
    """Shards of native fits finish tens of minutes apart; torch's default 30-minute wait at
    the final metric sync killed such a run."""
    from datetime import timedelta

    config = compose_config("run", ["trainer=ddp"])
    strategy = instantiate(config.trainer.strategy)
    assert strategy._timeout >= timedelta(hours=12)
