"""Fit once, segment many: a saved network, ids kept across images, warm starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dynaseg.backbones import CNNBackbone
from dynaseg.engine import Segmenter
from dynaseg.reuse import ModelError, ModelSegmenter, WarmStart, fit_shared, save_model
from dynaseg.stopping import ConvergenceRule, ThresholdStopping
from dynaseg.weighting import FixedWeighting
from tests.synthetic import region_image

MATERIALS = [(200, 40, 40), (40, 170, 60), (50, 60, 210)]


def settings(segmenter: Segmenter) -> dict:
    return {
        "segmenter": {
            "backbone": {"n_features": segmenter.n_clusters},
            "n_clusters": segmenter.n_clusters,
        }
    }


def layouts(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """The three materials in a random layout: three bands (each a fifth or more of the image)
    at a random angle, in a random order."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    angle = rng.uniform(0, np.pi)
    t = np.cos(angle) * cols + np.sin(angle) * rows
    cuts = np.quantile(t, [rng.uniform(0.25, 0.4), rng.uniform(0.6, 0.75)])
    regions = np.digitize(t, cuts)
    order = rng.permutation(3)
    regions = order[regions]
    return region_image(regions, MATERIALS, 6.0, seed), regions


def small_segmenter(**kwargs) -> Segmenter:
    return Segmenter(
        backbone=lambda: CNNBackbone(channels=16, n_components=2),
        n_clusters=16,
        weighting=FixedWeighting(1.0),
        stopping=ThresholdStopping(3),
        **kwargs,
    )


def test_a_saved_model_labels_exactly_as_the_network_it_saved(tmp_path):
    segmenter = small_segmenter()
    images = [layouts(seed)[0] for seed in range(2)]
    net, history = fit_shared(segmenter, images, seed=0, iterations=5, crop=16, batch=2)
    assert len(history["q"]) == 5
    save_model(tmp_path / "m.safetensors", net, settings(segmenter))
    model = ModelSegmenter.from_file(segmenter, tmp_path / "m.safetensors", settings(segmenter))
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(images[1]).permute(2, 0, 1).float().div(255)[None])[1]
    np.testing.assert_array_equal(model.label(images[1]), expected.argmax(1)[0].numpy())
    again = ModelSegmenter.from_file(segmenter, tmp_path / "m.safetensors", settings(segmenter))
    np.testing.assert_array_equal(again.fit(images[0]).labels, model.fit(images[0]).labels)


def test_what_is_not_a_model_of_these_settings_is_refused_naming_the_file(tmp_path):
    segmenter = small_segmenter()
    (tmp_path / "notes.safetensors").write_text("hello")
    with pytest.raises(ModelError, match="notes.safetensors: not a dynaseg model"):
        ModelSegmenter.from_file(segmenter, tmp_path / "notes.safetensors", settings(segmenter))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="other.safetensors: not a dynaseg model"):
        ModelSegmenter.from_file(segmenter, tmp_path / "other.safetensors", settings(segmenter))
    net, _ = fit_shared(segmenter, [layouts(0)[0]], iterations=1, crop=16, batch=1)
    save_model(tmp_path / "m.safetensors", net, settings(segmenter))
    bigger = Segmenter(n_clusters=32)
    with pytest.raises(
        ModelError, match=r"m.safetensors: fitted with other settings \(backbone, n_clusters"
    ):
        ModelSegmenter.from_file(bigger, tmp_path / "m.safetensors", settings(bigger))
    with pytest.raises(ModelError, match="no such model file"):
        ModelSegmenter.from_file(segmenter, tmp_path / "missing.safetensors", settings(segmenter))


def majority(labels: np.ndarray, regions: np.ndarray) -> list[int]:
    """Per material, the id most of its pixels carry."""
    return [int(np.bincount(labels[regions == m]).argmax()) for m in range(3)]


@pytest.mark.slow
def test_fit_once_gives_each_material_one_id_in_every_image(tmp_path):
    torch.manual_seed(0)
    segmenter = small_segmenter()
    fitted = [layouts(seed)[0] for seed in range(3)]
    net, _ = fit_shared(segmenter, fitted, seed=0, iterations=150, crop=24, batch=4)
    save_model(tmp_path / "m.safetensors", net, settings(segmenter))
    model = ModelSegmenter.from_file(segmenter, tmp_path / "m.safetensors", settings(segmenter))
    ids = []
    for seed in range(3, 7):  # images the network never saw
        image, regions = layouts(seed)
        labels = model.fit(image).labels
        ids.append(majority(labels, regions))
        for m in range(3):  # most of each material carries its id, not just a plurality
            assert (labels[regions == m] == ids[-1][m]).mean() > 0.75
    assert all(found == ids[0] for found in ids) and len(set(ids[0])) == 3


def moving_square(frame: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    regions = np.zeros((size, size), np.int64)
    regions[12:28, 6 + frame : 22 + frame] = 1
    return region_image(regions, MATERIALS[:2], 6.0, frame), regions


@pytest.mark.slow
def test_warm_started_frames_keep_their_ids_and_settle_sooner():
    make = lambda: small_segmenter(convergence=ConvergenceRule(0.005, 5), max_iter=200)  # noqa: E731
    warm = WarmStart(segmenter=make())
    cold_iterations, warm_iterations, ids = [], [], []
    for frame in range(5):
        image, regions = moving_square(frame)
        result = warm.fit(image, seed=0)
        ids.append([int(np.bincount(result.labels[regions == m]).argmax()) for m in (0, 1)])
        cold = make().fit(image, seed=frame)
        if frame:
            warm_iterations.append(result.iterations)
            cold_iterations.append(cold.iterations)
    assert all(found == ids[0] for found in ids) and ids[0][0] != ids[0][1]
    assert np.median(warm_iterations) < np.median(cold_iterations)
