"""What every pretrained-encoder + FPN backbone shares (ResNet-18 and EfficientNet-Lite0): exact
output size, a frozen encoder that never moves, the encoder's own learning rate, a short fit."""

from functools import partial

import pytest
import torch

from dynaseg.backbones import EfficientNetLite0FPN, ResNet18FPN
from dynaseg.engine import HISTORY_KEYS, Segmenter
from dynaseg.losses import continuity_loss, similarity_loss
from dynaseg.model import SegmentationNet
from dynaseg.stopping import ThresholdStopping


@pytest.fixture(params=[ResNet18FPN, EfficientNetLite0FPN], ids=["resnet18", "lite0"])
def small(request):
    """A randomly initialised backbone of each kind with p = 8 (no weights file needed)."""
    return partial(request.param, channels=8, pretrained=False)


@pytest.mark.parametrize(("height", "width"), [(321, 481), (97, 130), (64, 64), (5, 7)])
def test_features_and_response_have_exactly_the_input_size(small, height, width):
    with torch.no_grad():
        features, response = SegmentationNet(small(), 5)(torch.rand(1, 3, height, width))
    assert features.shape == (1, 8, height, width)
    assert response.shape == (1, 5, height, width)


def test_a_frozen_encoder_gets_no_gradient_and_keeps_weights_and_statistics(small):
    torch.manual_seed(0)
    net = SegmentationNet(small(freeze_encoder=True), 4).train()
    assert not net.backbone.encoder.training and net.backbone.lateral.training
    before = {k: v.clone() for k, v in net.backbone.encoder.state_dict().items()}
    decoder_before = net.backbone.smooth["2"].weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameter_groups(), lr=0.1, momentum=0.9)
    image = torch.rand(1, 3, 64, 80)
    for _ in range(3):
        _, response = net(image)
        loss = similarity_loss(response, response.argmax(1)) + continuity_loss(response)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in net.backbone.encoder.parameters())
    after = net.backbone.encoder.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not torch.equal(net.backbone.smooth["2"].weight, decoder_before)
    grouped = {id(p) for group in net.parameter_groups() for p in group["params"]}
    assert not grouped & {id(p) for p in net.backbone.encoder.parameters()}


def test_the_encoder_gets_its_own_learning_rate(small):
    net = SegmentationNet(small(encoder_lr=0.01), 4)
    optimizer = torch.optim.SGD(net.parameter_groups(), lr=0.1)
    encoder = {id(p) for p in net.backbone.encoder.parameters()}
    lrs = {
        group["lr"]
        for group in optimizer.param_groups
        if encoder & {id(p) for p in group["params"]}
    }
    others = [g for g in optimizer.param_groups if not encoder & {id(p) for p in g["params"]}]
    assert lrs == {0.01} and {g["lr"] for g in others} == {0.1}
    grouped = [id(p) for group in net.parameter_groups() for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())  # each exactly once


def test_a_short_fit_lowers_the_loss(small, three_regions):
    image, _ = three_regions
    segmenter = Segmenter(
        backbone=partial(small, channels=16),
        stopping=ThresholdStopping(0),
        n_clusters=8,
        max_iter=5,
    )
    result = segmenter.fit(image[:64, :96], seed=0)
    assert result.labels.shape == (64, 96) and result.iterations == 5
    history = result.history
    assert list(history) == list(HISTORY_KEYS)
    total = [
        s + mu * c
        for s, mu, c in zip(history["loss_sim"], history["mu"], history["loss_con"], strict=True)
    ]
    assert total[-1] < total[0]


def test_invalid_arguments_are_refused(small):
    with pytest.raises(ValueError, match="channels"):
        small(channels=0)
    with pytest.raises(ValueError, match="stages"):
        small(stages=(1, 2))
    with pytest.raises(ValueError, match="stages"):
        small(stages=())
    with pytest.raises(ValueError, match="encoder_lr"):
        small(encoder_lr=0.0)
    with pytest.raises(ValueError, match="frozen"):
        small(encoder_lr=0.01, freeze_encoder=True)
