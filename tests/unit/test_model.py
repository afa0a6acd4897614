import pytest
import torch

from dynaseg.backbones import CNNBackbone
from dynaseg.model import SegmentationNet


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_cnn_has_193900_parameters():
    # Table 4: M = 3 components, p = q = 100, classifier + BN included.
    assert n_parameters(SegmentationNet(CNNBackbone(channels=100, n_components=3), 100)) == 193_900


@pytest.mark.parametrize(("channels", "m", "q"), [(8, 1, 5), (16, 2, 7)])
def test_parameter_count_follows_the_architecture(channels, m, q):
    conv_first = 3 * 9 * channels + channels
    conv_rest = (m - 1) * (channels * 9 * channels + channels)
    batchnorms = m * 2 * channels + 2 * q
    classifier = channels * q + q
    expected = conv_first + conv_rest + batchnorms + classifier
    assert n_parameters(SegmentationNet(CNNBackbone(channels, m), q)) == expected


@pytest.mark.parametrize(("height", "width"), [(17, 23), (32, 32), (5, 9)])
def test_response_keeps_the_input_resolution(height, width):
    features, response = SegmentationNet(CNNBackbone(8, 2), 6)(torch.rand(1, 3, height, width))
    assert features.shape == (1, 8, height, width)
    assert response.shape == (1, 6, height, width)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="channels must be >= 1"):
        CNNBackbone(channels=0)
    with pytest.raises(ValueError, match="n_clusters"):
        SegmentationNet(CNNBackbone(4, 1), 1)
