import numpy as np
import pytest
import torch

from dynaseg.engine import to_tensor
from dynaseg.stopping import (
    ConvergenceRule,
    SilhouetteStopping,
    ThresholdStopping,
    estimate_n_clusters,
)
from tests.synthetic import region_image


def four_colour_image() -> np.ndarray:
    regions = np.zeros((60, 60), dtype=np.int64)
    regions[:30, 30:] = 1
    regions[30:, :30] = 2
    regions[30:, 30:] = 3
    colours = [(230, 30, 30), (30, 200, 40), (40, 50, 220), (240, 230, 60)]
    return region_image(regions, colours, noise=10.0, seed=3)


def test_silhouette_phase_picks_four_on_four_separated_colour_regions():
    image = to_tensor(four_colour_image())
    threshold, opt_nc = SilhouetteStopping().resolve(image, lambda: torch.empty(0), seed=0)
    assert threshold == opt_nc == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silhouette_estimate_is_stable_across_seeds(seed):
    pixels = to_tensor(four_colour_image()).flatten(1).T
    assert estimate_n_clusters(pixels, 2, 10, 1000, seed) == 4


def test_silhouette_can_use_network_features():
    features = torch.zeros(5, 20, 20)
    features[:, :, 10:] = 4.0
    features[0, 10:, :] += 9.0
    features += 0.05 * torch.randn(features.shape, generator=torch.Generator().manual_seed(0))
    stopping = SilhouetteStopping(k_min=2, k_max=6, features="network")
    assert stopping.resolve(torch.zeros(3, 20, 20), lambda: features, seed=0) == (4, 4)


def test_flat_image_cannot_exceed_its_distinct_colours():
    pixels = torch.zeros(400, 3)
    pixels[200:] = 1.0
    assert estimate_n_clusters(pixels, 3, 26, 300, 0) == 2


def test_fixed_threshold_ignores_the_image():
    assert ThresholdStopping(5).resolve(torch.rand(3, 8, 8), lambda: torch.rand(4, 8, 8), 0) == (
        5,
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k_min": 1}, "k_min must be >= 2"),
        ({"k_min": 9, "k_max": 4}, "must be <= k_max"),
        ({"n_samples": 10}, "must exceed k_max"),
        ({"features": "depth"}, "features must be"),
    ],
)
def test_silhouette_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SilhouetteStopping(**kwargs)


def test_negative_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        ThresholdStopping(-1)


def test_convergence_fires_at_the_first_iteration_ending_a_still_window():
    rule = ConvergenceRule(tolerance=0.01, window=3)
    assert rule.first_stop([1.0, 0.005, 0.005, 0.5, 0.0, 0.009, 0.0, 0.0]) == 6
    assert rule.first_stop([1.0, 0.005, 0.005, 0.01, 0.0]) is None  # 0.01 is not below ε
    assert ConvergenceRule(0.5, 1).first_stop([1.0, 0.2]) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerance": 0.0}, "tolerance"),
        ({"tolerance": 1.5}, "tolerance"),
        ({"window": 0}, "window"),
    ],
)
def test_convergence_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvergenceRule(**kwargs)
