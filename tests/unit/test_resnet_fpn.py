"""ResNet-18 + FPN backbone: offline weight loading, the stages built, the COCO presets (what every
pyramid backbone shares is in test_pyramid_backbones.py)."""

import socket
import urllib.request
from functools import partial

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from dynaseg.backbones import (
    PretrainedWeightsError,
    ResNet18FPN,
    WeightsNotFoundError,
    default_resnet18_weights,
)
from dynaseg.config import compose_config
from dynaseg.engine import Segmenter

small = partial(ResNet18FPN, channels=8, pretrained=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test loudly instead of hanging (or succeeding)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_the_no_network_guard_catches_torchvisions_own_download(no_network, torch_home):
    with pytest.raises(AssertionError, match="download was attempted"):
        torchvision.models.resnet18(weights="IMAGENET1K_V1")


def reference_resnet18(seed: int) -> torchvision.models.ResNet:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None)


@pytest.mark.parametrize("stages", [(5,), (3, 5), (2, 3, 4, 5)])
def test_any_stage_subset_gives_the_input_size_and_builds_only_the_stages_needed(stages):
    backbone = small(stages=stages)
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 45, 70)).shape == (1, 8, 45, 70)
    built = {name for name, _ in backbone.encoder.named_children() if name.startswith("layer")}
    assert built == {f"layer{stage - 1}" for stage in range(2, max(stages) + 1)}


def test_weights_in_the_hub_cache_are_loaded_into_the_encoder(torch_home, no_network):
    reference = reference_resnet18(seed=123)
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    assert default_resnet18_weights() == path

    torch.manual_seed(0)
    loaded = ResNet18FPN(channels=8)
    torch.manual_seed(0)
    random = ResNet18FPN(channels=8, pretrained=False)
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    actual = loaded.encoder.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
    assert not torch.equal(random.encoder.conv1.weight, loaded.encoder.conv1.weight)


def test_weights_from_an_explicit_path(tmp_path, no_network):
    reference = reference_resnet18(seed=7)
    path = tmp_path / "my_resnet.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNet18FPN(channels=8, weights=str(path))
    assert torch.equal(backbone.encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_a_missing_file_stops_with_directions_and_no_download(torch_home, no_network):
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsNotFoundError) as caught:
        ResNet18FPN()
    message = str(caught.value)
    assert str(expected) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "pretrained=false" in message and "backbone.weights=" in message
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        ResNet18FPN(weights=str(torch_home / "nowhere.pth"))


def test_a_missing_file_stops_the_fit_too(torch_home, no_network, three_regions):
    image, _ = three_regions
    segmenter = Segmenter(backbone=ResNet18FPN, n_clusters=4, max_iter=1)
    with pytest.raises(WeightsNotFoundError):
        segmenter.fit(image)


def test_keys_are_checked_strictly(tmp_path):
    state = reference_resnet18(seed=0).state_dict()
    missing, extra, wrong = tmp_path / "missing.pth", tmp_path / "extra.pth", tmp_path / "x.pth"
    torch.save({k: v for k, v in state.items() if k != "layer2.0.conv1.weight"}, missing)
    torch.save({**state, "head.weight": torch.zeros(1)}, extra)
    torch.save([1, 2, 3], wrong)
    with pytest.raises(PretrainedWeightsError, match="layer2.0.conv1.weight"):
        ResNet18FPN(weights=str(missing))
    with pytest.raises(PretrainedWeightsError, match="head.weight"):
        ResNet18FPN(weights=str(extra))
    with pytest.raises(PretrainedWeightsError, match="not a state dict"):
        ResNet18FPN(weights=str(wrong))


def test_weights_with_pretrained_false_is_refused():
    with pytest.raises(ValueError, match="pretrained is false"):
        ResNet18FPN(pretrained=False, weights="x.pth")


@pytest.mark.parametrize("name", ["coco_fsf_resnet", "coco_scf_resnet", "coco_scf_resnet_thr3"])
def test_coco_presets_build_the_resnet_backbone_with_p_q_27(name, tmp_path):
    config = compose_config(
        "run", [f"+experiment={name}", f"dataset.root={tmp_path}", "backbone.pretrained=false"]
    )
    segmenter = instantiate(config.segmenter)
    assert segmenter.n_clusters == 27
    backbone = segmenter.backbone()
    assert isinstance(backbone, ResNet18FPN) and backbone.out_channels == 27
