from pathlib import Path

import pytest
from hydra.utils import instantiate

from dynaseg.config import compose_config, config_dir, options
from dynaseg.engine import Segmenter

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


def test_configs_are_packaged_into_the_wheel():
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"conf" = "dynaseg/conf"' in pyproject
