import numpy as np
import pytest
from PIL import Image

from dynaseg.images import ImageReadError, collect_inputs, load_image, resize_labels


def save(path, array, mode=None, **kwargs):
    Image.fromarray(array, mode=mode).save(path, **kwargs)
    return path


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_formats_round_trip(tmp_path, rgb, suffix):
    kwargs = {"lossless": True} if suffix == ".webp" else {}
    path = save(tmp_path / f"x{suffix}", rgb, **kwargs)
    np.testing.assert_array_equal(load_image(path), rgb)


def test_jpeg_loads_as_rgb(tmp_path, rgb):
    image = load_image(save(tmp_path / "x.jpg", rgb))
    assert image.shape == (12, 20, 3) and image.dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(rgb).save(tmp_path / "x.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "x.jpg").shape == (20, 12, 3)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    image = load_image(save(tmp_path / "g.png", grey))
    assert np.array_equal(image[..., 0], grey) and np.array_equal(image[..., 2], grey)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    deep = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    image = load_image(tmp_path / "d.png")
    assert image[..., 0].tolist() == [[0, 255], [128, 1]]


def test_rgba_and_palette_become_rgb(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full((12, 20, 1), 128, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(save(tmp_path / "a.png", rgba)), rgb)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png")
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), expected)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"just some notes\n", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image|cannot decode"),
    ],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as caught:
        load_image(path)
    assert str(caught.value).startswith(str(path))


def test_truncated_jpeg_is_refused(tmp_path, rgb):
    data = (save(tmp_path / "full.jpg", np.repeat(np.repeat(rgb, 20, 0), 20, 1))).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cannot decode"):
        load_image(tmp_path / "cut.jpg")


def test_pixel_limit_is_checked_before_decoding(tmp_path, rgb):
    with pytest.raises(ImageReadError, match="exceeds the limit.*max_side"):
        load_image(save(tmp_path / "x.png", rgb), max_pixels=100)


def test_degenerate_images_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match="too small"):
        load_image(save(tmp_path / "dot.png", np.zeros((1, 1, 3), np.uint8)))


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_collect_inputs_expands_folders_and_globs_and_reports_misses(tmp_path, rgb):
    save(tmp_path / "b.png", rgb)
    save(tmp_path / "a.jpg", rgb)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    save(tmp_path / "sub" / "c.png", rgb)
    paths, missing = collect_inputs(
        [str(tmp_path), str(tmp_path / "sub" / "*.png"), str(tmp_path / "a.jpg"), "nothing*.jpg"]
    )
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.png"]
    assert missing == ["nothing*.jpg: no such file, or no images matched"]


def test_resize_labels_is_nearest_and_exact_on_integer_factors():
    labels = np.array([[0, 1], [2, 3]])
    assert resize_labels(labels, (4, 4)).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
        [2, 2, 3, 3],
    ]
    assert resize_labels(resize_labels(labels, (6, 6)), (2, 2)).tolist() == labels.tolist()
