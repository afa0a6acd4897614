"""Config checks: every mistake is one line naming what to change, found before any compute."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from dynaseg.config import compose_config, options
from dynaseg.validation import (
    RESUME_KEYS,
    ConfigError,
    build,
    check_config,
    check_run_dir,
    check_segment_config,
    one_line,
    to_plain,
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["weighting.alpha=0"], "weighting: alpha must be > 0, got 0"),
        (["weighting=scf", "weighting.alpha=-5"], "weighting: alpha must be > 0, got -5"),
        (["weighting=fixed", "weighting.mu=-1"], "weighting: mu must be >= 0, got -1"),
        (["stopping.k_min=9", "stopping.k_max=4"], "stopping: k_min (9) must be <= k_max (4)"),
        (["max_iter=0"], "segmenter: max_iter (T) must be >= 1, got 0"),
        (["backbone.channels=0"], "backbone: channels must be >= 1, got 0"),
        (["dataset=folder"], "dataset.root must be set (it has no default)"),
        (["dataset=bsd500", "dataset.root=/no/such/dir"], "dataset.root=/no/such/dir does not"),
        (["max_pixels=0"], "max_pixels must be a whole number >= 4 or null, got 0"),
        (["num_workers=-1"], "num_workers must be a whole number >= 0, got -1"),
        (["strict=maybe"], "strict must be true or false, got 'maybe'"),
    ],
)
def test_config_mistakes_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_config(compose_config("run", overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_one_line_joins_messages_and_names_a_silent_exception():
    assert one_line("cannot identify image\n  file x.png") == "cannot identify image file x.png"
    assert one_line(OSError("truncated\nfile")) == "truncated file"
    assert one_line(KeyError()) == "KeyError"
    assert one_line("") == ""


def test_a_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        check_config(compose_config("run", ["dataset=folder", f"dataset.root={tmp_path}/file"]))


@pytest.mark.parametrize("overrides", [[], ["+experiment=sample_fsf_cnn", "max_pixels=null"]])
def test_valid_configs_pass(overrides):
    check_config(compose_config("run", overrides))


@pytest.mark.parametrize("group", ["backbone", "weighting", "stopping", "dataset"])
def test_hydra_refuses_unknown_names_and_lists_the_valid_ones(group):
    # Left to Hydra on purpose: it already fails before any compute, listing every option.
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("run", [f"{group}=nope"])
    text = str(info.value)
    assert f"Could not find '{group}/nope'" in text
    assert all(option in text for option in options(group))


def test_build_calls_a_partial_once_so_its_arguments_are_checked():
    config = compose_config("run", ["backbone.n_components=0"])
    with pytest.raises(ConfigError, match="backbone: n_components must be >= 1"):
        build(config, "backbone")


def test_build_keeps_a_dataset_error_whole(tmp_path):
    config = compose_config("run", ["dataset=bsd500", f"dataset.root={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^BSDS500 root .*found no directory images/test"):
        build(config, "dataset")


def save_run_config(output_dir: Path, overrides: list[str]) -> None:
    """What run.py saves as config.yaml, restricted to the keys a resume compares."""
    config = compose_config("run", overrides)
    plain = {key: to_plain(config[key]) for key in RESUME_KEYS}
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(plain), output_dir / "config.yaml")


def test_a_directory_with_results_is_not_overwritten_without_resume(tmp_path):
    check_run_dir(compose_config("run"), tmp_path)  # empty: fine
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "3096.json").write_text("{}")
    with pytest.raises(ConfigError, match="results of 1 image.*add resume=true"):
        check_run_dir(compose_config("run"), tmp_path)
    check_run_dir(compose_config("run", ["resume=true"]), tmp_path)


def test_resume_needs_the_same_method_and_data(tmp_path):
    save_run_config(tmp_path, ["max_iter=5"])
    check_run_dir(compose_config("run", ["max_iter=5", "resume=true"]), tmp_path)
    # More images of the same set, other workers or trainer: still the same run.
    check_run_dir(
        compose_config("run", ["max_iter=5", "resume=true", "dataset.limit=2", "num_workers=2"]),
        tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        check_run_dir(compose_config("run", ["max_iter=6", "seed=1", "resume=true"]), tmp_path)
    assert "segmenter.max_iter: 5 → 6" in str(info.value)
    assert "seed: 0 → 1" in str(info.value)
    with pytest.raises(ConfigError, match=r"segmenter.weighting._target_"):
        check_run_dir(
            compose_config("run", ["max_iter=5", "weighting=scf", "resume=true"]), tmp_path
        )


def test_reusing_a_network_needs_the_dynaseg_method(tmp_path):
    with pytest.raises(ConfigError, match="warm_start needs a DynaSeg network"):
        check_segment_config(compose_config("segment", ["method=kmeans", "warm_start=true"]))
    with pytest.raises(ConfigError, match="model and fit_on both name"):
        (tmp_path / "m").write_text("x")
        check_segment_config(compose_config("segment", [f"model={tmp_path / 'm'}", "fit_on=[a]"]))
