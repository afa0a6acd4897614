"""Where the Hydra configs live, the resolvers they use, and composing them in code.

The top-level ``conf/`` of a source checkout is packaged into the wheel as ``dynaseg/conf``, so
the same configs are found after a plain ``pip install .`` and from an editable checkout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from dynaseg.data.samples import sample_root

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The config folder: inside the installed package, else the source checkout's ``conf/``."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "segment.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no dynaseg configs next to {_PACKAGE}: the installation is broken")


def wandb_offline() -> bool:
    """Log to W&B offline unless the user has a key (env or ``wandb login``) or sets WANDB_MODE."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "disabled", "dryrun")
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    has_login = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return not (os.environ.get("WANDB_API_KEY") or has_login)


def run_name(dataset: str, method: str, weighting: str, backbone: str) -> str:
    """A run's name from its choices; a baseline's name leaves out the parts it does not use.

    >>> run_name("bsd500", "dynaseg", "fsf", "cnn"), run_name("bsd500", "kmeans", "fsf", "cnn")
    ('bsd500_dynaseg_fsf_cnn', 'bsd500_kmeans')
    """
    parts = [dataset, method, weighting, backbone] if method == "dynaseg" else [dataset, method]
    return "_".join(parts)


def register_resolvers() -> None:
    """Make ``${dynaseg.sample_root:}``, ``${dynaseg.wandb_offline:}`` and
    ``${dynaseg.run_name:…}`` usable in configs."""
    OmegaConf.register_new_resolver("dynaseg.sample_root", lambda: str(sample_root()), replace=True)
    OmegaConf.register_new_resolver("dynaseg.wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("dynaseg.run_name", run_name, replace=True)


def options(group: str) -> list[str]:
    """The option names of a config group (``weighting`` → ``["fixed", "fsf", "scf"]``)."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def compose_config(
    config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False
) -> DictConfig:
    """Compose a config by name with Hydra overrides, as ``@hydra.main`` would."""
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(
            config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )
