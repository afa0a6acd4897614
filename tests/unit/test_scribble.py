"""Scribbles: reading and checking the strokes, the scribble term, and a fit that follows them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dynaseg.engine import Segmenter
from dynaseg.images import ImageReadError
from dynaseg.losses import UNMARKED, Strokes, scribble_loss, similarity_loss
from dynaseg.scribble import check_classes, read_scribble, scribble_owner, scribble_summary
from dynaseg.stopping import ThresholdStopping

sys.path.insert(0, str(Path(__file__).parents[2] / "experiments"))

from scribble_study import best_ious, region_ious, scene  # noqa: E402


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array.astype(np.uint8), mode).save(path)
    return path


def test_the_scribble_term_is_the_cross_entropy_of_the_marked_pixels_only():
    response = torch.randn(1, 4, 3, 5)
    scribble = torch.full((1, 3, 5), UNMARKED)
    scribble[0, 1, 2], scribble[0, 0, 4] = 3, 1
    by_hand = (
        F.cross_entropy(response[:, :, 1, 2], torch.tensor([3]))
        + F.cross_entropy(response[:, :, 0, 4], torch.tensor([1]))
    ) / 2
    torch.testing.assert_close(scribble_loss(response, Strokes.of(scribble)), by_hand)
    target = response.argmax(1)
    unmarked = scribble[0] == UNMARKED
    expected = F.cross_entropy(response[0].permute(1, 2, 0)[unmarked], target[0][unmarked])
    torch.testing.assert_close(similarity_loss(response, target, Strokes.of(scribble)), expected)


def test_a_scribble_is_read_as_class_ids_at_the_image_size(tmp_path):
    strokes = np.full((10, 20), 255)
    strokes[2, 3:9], strokes[7, 10:15] = 0, 4
    grey = read_scribble(save(tmp_path / "grey.png", strokes), (10, 20))
    np.testing.assert_array_equal(grey, strokes)
    rgb = read_scribble(save(tmp_path / "rgb.png", np.repeat(strokes[..., None], 3, 2)), (10, 20))
    np.testing.assert_array_equal(rgb, strokes)
    half = save(tmp_path / "half.png", strokes[::2, ::2])
    assert read_scribble(half, (10, 20)).shape == (10, 20)  # same aspect: resized


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((10, 20), 255), "marks no pixel"),
        (np.zeros((20, 20)), "only a scribble of the image's aspect ratio"),
        (np.dstack([np.zeros((10, 20)), np.ones((10, 20)), np.zeros((10, 20))]), "colour image"),
    ],
)
def test_bad_scribbles_are_refused_naming_the_file(tmp_path, array, message):
    path = save(tmp_path / "bad_scribble.png", array)
    with pytest.raises(ImageReadError, match=message) as error:
        read_scribble(path, (10, 20))
    assert str(error.value).startswith(str(path))
    (tmp_path / "junk_scribble.png").write_text("not a png")
    with pytest.raises(ImageReadError, match="cannot read"):
        read_scribble(tmp_path / "junk_scribble.png", (10, 20))


def test_classes_must_lie_below_q_and_the_summary_maps_each_to_its_label(tmp_path):
    strokes = np.full((4, 4), 255)
    strokes[0, 0], strokes[3, 3] = 2, 100
    assert "class 100 is not below q = 100" in check_classes(tmp_path / "s.png", strokes, 100)
    assert check_classes(tmp_path / "s.png", strokes, 101) is None
    labels = np.zeros((4, 4), int)
    labels[3, 3] = 5
    assert scribble_summary(labels, strokes) == {
        "labels": {"2": 0, "100": 5},
        "marked_pixels": 2,
        "kept": 1.0,
    }


def test_a_scribble_belongs_to_the_image_beside_it(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4)))
    assert scribble_owner(save(tmp_path / "a_scribble.png", np.zeros((4, 4)))) == tmp_path / "a.png"
    assert scribble_owner(save(tmp_path / "b_scribble.png", np.zeros((4, 4)))) is None
    assert scribble_owner(tmp_path / "a.png") is None


def test_a_scribbled_fit_stops_at_the_number_of_classes_and_takes_one_image():
    image, _, strokes = scene(0, size=32)
    segmenter = Segmenter(stopping=ThresholdStopping(7), max_iter=5)
    result = segmenter.fit(image, scribble=strokes)
    assert result.threshold == 2 and result.opt_nc is None
    with pytest.raises(ValueError, match="one image at a time"):
        segmenter.fit_many([image, image], [0, 1], scribbles=[strokes, strokes])
    with pytest.raises(ValueError, match="marks no pixel"):
        segmenter.fit(image, scribble=np.full(strokes.shape, UNMARKED))


@pytest.mark.slow
def test_scribbles_separate_two_faint_regions_that_the_plain_fit_does_not():
    """16 grey levels apart under noise of σ = 12 (96×96): our default with two strokes."""
    from hydra.utils import instantiate

    from dynaseg.config import compose_config

    segmenter = instantiate(compose_config("segment", ["precision=fp32"]).segmenter)
    for seed in (0, 1):
        image, truth, strokes = scene(seed)
        plain = segmenter.fit(image, seed=seed)
        assert min(best_ious(plain.labels, truth)) < 0.85
        guided = segmenter.fit(image, seed=seed, scribble=strokes)
        assert min(region_ious(guided.labels, truth, strokes)) >= 0.85
        assert scribble_summary(guided.labels, strokes)["kept"] >= 0.99
