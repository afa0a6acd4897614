"""Datasets read tiny fixtures written in each dataset's real on-disk format (docs/protocols.md)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import ndimage

from dynaseg.data import (
    BSDS500,
    COARSE_CLASS_NAMES,
    N_THINGS,
    VOC2012,
    CocoStuff27,
    DatasetError,
    ImageFolder,
    SampleReadError,
    resize_long_side,
    sample_root,
)
from dynaseg.data.cocostuff import fine_to_coarse, read_id_list
from dynaseg.data.voc import connected_components
from dynaseg.images import ImageReadError

RNG = np.random.default_rng(0)


def write_jpg(path: Path, h: int, w: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return pixels


def write_bsds_mat(path: Path, segmentations: list[np.ndarray]) -> None:
    """Write a 1xN MATLAB cell array of structs, like the BSDS500 groundTruth files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = np.empty((1, len(segmentations)), dtype=object)
    for j, seg in enumerate(segmentations):
        boundaries = np.zeros(seg.shape, np.uint8)
        boundaries[:, 1:] |= (seg[:, 1:] != seg[:, :-1]).astype(np.uint8)
        cells[0, j] = {"Segmentation": seg.astype(np.uint16), "Boundaries": boundaries}
    scipy.io.savemat(path, {"groundTruth": cells})


def bsds_segmentation(h: int, w: int, n_regions: int) -> np.ndarray:
    seg = np.ones((h, w), np.uint16)
    for k in range(1, n_regions):
        seg[:, k * w // n_regions :] = k + 1
    return seg


@pytest.fixture
def bsds_root(tmp_path: Path) -> Path:
    root = tmp_path / "BSDS500" / "data"
    # id: (H, W, number of annotators)
    items = {"100": (12, 18, 3), "20": (18, 12, 2), "3": (12, 18, 1)}
    for item_id, (h, w, k) in items.items():
        write_jpg(root / "images" / "val" / f"{item_id}.jpg", h, w)
        segs = [bsds_segmentation(h, w, n) for n in (2, 3, 4)][:k]
        write_bsds_mat(root / "groundTruth" / "val" / f"{item_id}.mat", segs)
    (root / "images" / "val" / "Thumbs.db").write_bytes(b"not an image")
    return root


def test_bsds_fixture_has_the_real_mat_structure(bsds_root: Path) -> None:
    mat = scipy.io.loadmat(bsds_root / "groundTruth" / "val" / "100.mat")
    cells = mat["groundTruth"]
    assert cells.shape == (1, 3) and cells.dtype == object
    assert cells[0, 0].dtype.names == ("Segmentation", "Boundaries")
    seg = cells[0, 1]["Segmentation"][0, 0]
    assert seg.dtype == np.uint16 and seg.shape == (12, 18) and seg.min() == 1


def test_bsds500_items(bsds_root: Path) -> None:
    ds = BSDS500(bsds_root)
    assert ds.ids == ["100", "20", "3"]  # sorted as strings; Thumbs.db skipped
    sample = ds[1]
    assert sample["id"] == "20"
    assert sample["path"] == str(bsds_root / "images" / "val" / "20.jpg")
    assert sample["size"] == (18, 12)
    assert sample["image"].shape == (3, 18, 12) and sample["image"].dtype == torch.float32
    assert sample["image"].min() >= 0.0 and sample["image"].max() <= 1.0
    gt = sample["gt"]
    assert gt.dtype == torch.int64 and gt.shape == (2, 18, 12)
    expected = np.stack([bsds_segmentation(18, 12, 2), bsds_segmentation(18, 12, 3)])
    assert torch.equal(gt, torch.from_numpy(expected.astype(np.int64)))
    assert ds[0]["gt"].shape == (3, 12, 18)


def test_bsds500_limit_and_max_side(bsds_root: Path) -> None:
    ds = BSDS500(bsds_root, limit=2, max_side=9)
    assert len(ds) == 2 and ds.ids == ["100", "20"]
    sample = ds[0]
    assert sample["image"].shape == (3, 6, 9)  # model input shrunk ...
    assert sample["gt"].shape == (3, 12, 18)  # ... GT kept at the evaluation size
    assert sample["size"] == (12, 18)
    with pytest.raises(IndexError):
        ds[2]


def test_bsds500_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="found no such directory") as info:
        BSDS500(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_bsds500_root_one_level_too_high(bsds_root: Path) -> None:
    with pytest.raises(DatasetError) as info:
        BSDS500(bsds_root.parent)
    message = str(info.value)
    assert "expected images/val/*.jpg and groundTruth/val/*.mat" in message
    assert "found no directory images/val" in message
    assert f"did you mean root={bsds_root}" in message


def test_bsds500_missing_gt(bsds_root: Path) -> None:
    missing = bsds_root / "groundTruth" / "val" / "20.mat"
    missing.unlink()
    dataset = BSDS500(bsds_root)  # one missing file fails its own item, not the dataset
    index = dataset.ids.index("20")
    with pytest.raises(SampleReadError, match="ground truth missing") as info:
        dataset[index]
    assert str(info.value).startswith(str(missing))
    for other in (bsds_root / "groundTruth" / "val").glob("*.mat"):
        other.unlink()
    with pytest.raises(DatasetError, match="none of the .* file"):
        BSDS500(bsds_root)


def test_bsds500_gt_of_wrong_size(bsds_root: Path) -> None:
    gt_path = bsds_root / "groundTruth" / "val" / "3.mat"
    write_bsds_mat(gt_path, [bsds_segmentation(18, 12, 2)])
    ds = BSDS500(bsds_root)
    with pytest.raises(SampleReadError) as info:
        ds[2]
    assert str(info.value).startswith(str(gt_path))
    assert "18x12" in str(info.value) and "12x18" in str(info.value)


def test_bsds500_corrupt_mat(bsds_root: Path) -> None:
    gt_path = bsds_root / "groundTruth" / "val" / "3.mat"
    gt_path.write_bytes(b"garbage")
    with pytest.raises(SampleReadError) as info:
        BSDS500(bsds_root)[2]
    assert str(info.value).startswith(str(gt_path))


def test_bsds500_image_stays_on_the_annotated_pixel_grid(bsds_root: Path) -> None:
    """An EXIF rotation tag must not turn the image away from its label map."""
    path = bsds_root / "images" / "val" / "3.jpg"
    raw = np.asarray(Image.open(path).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(raw).save(path, quality=95, exif=exif.tobytes())
    sample = BSDS500(bsds_root)[2]
    assert sample["image"].shape == (3, 12, 18)


def test_bundled_samples() -> None:
    ds = BSDS500(sample_root())
    assert len(ds) == 4
    for sample in ds:
        assert 5 <= sample["gt"].shape[0] <= 7
        assert sample["gt"].shape[1:] in {(321, 481), (481, 321)}
        assert sample["image"].shape[1:] == sample["gt"].shape[1:]
        assert sample["gt"].min() >= 1


# --- VOC ------------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    """The standard VOC bit-interleaved colour map (index 255 → cream void colour)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = labels.shape
    image = Image.frombytes("P", (w, h), labels.astype(np.uint8).tobytes())
    image.putpalette(voc_palette())
    image.save(path)


VOC_CLASS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 15, 15, 255, 0, 15, 15, 0],
        [0, 15, 15, 255, 0, 15, 15, 0],
        [0, 255, 255, 255, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [12, 12, 0, 0, 0, 0, 0, 0],
    ]
)
VOC_OBJECT = np.where(VOC_CLASS == 15, 1, VOC_CLASS)
VOC_OBJECT[1:3, 5:7] = 2
VOC_OBJECT[5, :2] = 3


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    ids = ["2007_000039", "2007_000032"]
    for item_id in ids:
        write_jpg(root / "JPEGImages" / f"{item_id}.jpg", *VOC_CLASS.shape)
        write_voc_png(root / "SegmentationClass" / f"{item_id}.png", VOC_CLASS)
        write_voc_png(root / "SegmentationObject" / f"{item_id}.png", VOC_OBJECT)
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True)
    (split_dir / "trainval.txt").write_text("\n".join(ids) + "\n")
    (split_dir / "train.txt").write_text(ids[0] + "\n")
    return root


def test_voc_fixture_is_a_palette_png(voc_root: Path) -> None:
    with Image.open(voc_root / "SegmentationObject" / "2007_000032.png") as image:
        assert image.mode == "P"
        assert image.convert("RGB").getpixel((0, 5)) == (128, 128, 0)  # index 3
        assert image.convert("RGB").getpixel((3, 1)) == (224, 224, 192)  # void


def test_voc_object(voc_root: Path) -> None:
    ds = VOC2012(voc_root)
    assert ds.ids == ["2007_000032", "2007_000039"]
    sample = ds[0]
    assert sample["gt"].shape == (1, 6, 8) and sample["gt"].dtype == torch.int64
    assert torch.equal(sample["gt"][0], torch.from_numpy(VOC_OBJECT))  # indices, void kept
    assert sample["size"] == (6, 8) and sample["image"].shape == (3, 6, 8)
    assert VOC2012(voc_root, split="train").ids == ["2007_000039"]


def test_voc_class_cc(voc_root: Path) -> None:
    gt = VOC2012(voc_root, gt="class_cc", max_side=4)[0]["gt"][0]
    assert gt.shape == (6, 8)
    assert (gt == 255).sum() == (VOC_CLASS == 255).sum()
    # background, two separate class-15 blobs and one class-12 blob: four segments
    assert len(torch.unique(gt[gt != 255])) == 4
    assert gt[1, 1] != gt[1, 5]


def test_connected_components_never_produce_the_void_value() -> None:
    checker = (np.indices((20, 20)).sum(axis=0) % 2).astype(np.int64)  # 400 one-pixel parts
    out = connected_components(checker)
    assert len(np.unique(out)) == 400 and 255 not in out


def per_value_components(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Reference: one ndimage.label (4-connected) per label value, in increasing value order."""
    out = np.full(labels.shape, ignore_index, dtype=np.int64)
    offset = 0
    for value in np.unique(labels[labels != ignore_index]):
        components, count = ndimage.label(labels == value)
        ids = components[components > 0] - 1 + offset
        out[components > 0] = np.where(ids >= ignore_index, ids + 1, ids)
        offset += count
    return out


@pytest.mark.parametrize("seed", range(4))
def test_connected_components_number_by_value_then_raster_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 3, 15, 255], size=(23, 31), p=[0.4, 0.25, 0.25, 0.1])
    for dtype in (np.uint8, np.int64):
        out = connected_components(labels.astype(dtype))
        np.testing.assert_array_equal(out, per_value_components(labels))
    mask = labels > 0  # skimage alone would read a bool map as a foreground mask
    np.testing.assert_array_equal(connected_components(mask), per_value_components(mask))
    void = np.full((2, 3), 255)
    np.testing.assert_array_equal(connected_components(void), void)


def test_voc_errors(voc_root: Path) -> None:
    with pytest.raises(DatasetError, match="no file ImageSets/Segmentation/val.txt"):
        VOC2012(voc_root, split="val")
    with pytest.raises(ValueError, match="gt must be one of"):
        VOC2012(voc_root, gt="instance")
    missing = voc_root / "SegmentationObject" / "2007_000039.png"
    missing.unlink()
    dataset = VOC2012(voc_root)  # one missing file fails its own item, not the dataset
    with pytest.raises(SampleReadError, match="ground truth missing") as info:
        dataset[dataset.ids.index("2007_000039")]
    assert str(info.value).startswith(str(missing))


def test_voc_rgb_gt_is_refused(voc_root: Path) -> None:
    path = voc_root / "SegmentationObject" / "2007_000032.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(SampleReadError, match="mode RGB") as info:
        VOC2012(voc_root)[0]
    assert str(info.value).startswith(str(path))


# --- COCO-Stuff-27 --------------------------------------------------------------------------


def test_shipped_coco_data() -> None:
    ids = read_id_list()
    assert len(ids) == 2175 and ids[0] == "000000000139" and ids[-1] == "000000581615"
    assert all(len(i) == 12 and i.isdigit() for i in ids)
    assert len(COARSE_CLASS_NAMES) == 27 and N_THINGS == 12
    assert COARSE_CLASS_NAMES[0] == "electronic-things"
    assert COARSE_CLASS_NAMES[26] == "water-stuff"
    table = json.loads(
        resources.files("dynaseg.data").joinpath("cocostuff27/fine_to_coarse.json").read_text()
    )
    fine = np.arange(256)
    expected = [table["fine_to_coarse"].get(str(v), 255) for v in fine]
    assert fine_to_coarse(fine).tolist() == expected
    assert set(fine_to_coarse(np.arange(91)).tolist()) == set(range(12))  # things
    assert set(fine_to_coarse(np.arange(91, 182)).tolist()) == set(range(12, 27))  # stuff


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """Two images: a landscape 150x200 (HxW) and a portrait 200x150, labels 0-181 and 255."""
    root = tmp_path / "cocostuff"
    for item_id, (h, w) in {"000000000285": (150, 200), "000000000139": (200, 150)}.items():
        write_jpg(root / "images" / "val2017" / f"{item_id}.jpg", h, w)
        fine = (np.arange(h * w).reshape(h, w) // 97 % 183).astype(np.uint8)
        fine[fine == 182] = 255
        path = root / "annotations" / "val2017" / f"{item_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fine).save(path)
    (root / "curated.txt").write_text("000000000285\r\n\n000000000139")  # no final newline
    return root


def reference_view(path: Path, mode: TF.InterpolationMode, size: int = 320) -> np.ndarray:
    """PiCIE's transform, done independently with torchvision on the PIL image."""
    with Image.open(path) as image:
        image = image.convert("RGB") if path.suffix == ".jpg" else image.copy()
    return np.asarray(TF.center_crop(TF.resize(image, size, interpolation=mode), size))


@pytest.mark.parametrize("index", [0, 1])
def test_cocostuff_mapping_and_crop_geometry(coco_root: Path, index: int) -> None:
    ds = CocoStuff27(coco_root, curated=coco_root / "curated.txt")
    assert ds.ids == ["000000000139", "000000000285"]
    sample = ds[index]
    item_id = ds.ids[index]
    assert sample["size"] == (320, 320)
    assert sample["image"].shape == (3, 320, 320) and sample["gt"].shape == (1, 320, 320)
    assert sample["gt"].dtype == torch.int64
    fine = reference_view(
        coco_root / "annotations" / "val2017" / f"{item_id}.png", TF.InterpolationMode.NEAREST
    )
    assert torch.equal(sample["gt"][0], torch.from_numpy(fine_to_coarse(fine).astype(np.int64)))
    values = set(torch.unique(sample["gt"]).tolist())
    assert 255 in values and values <= set(range(27)) | {255}
    rgb = reference_view(
        coco_root / "images" / "val2017" / f"{item_id}.jpg", TF.InterpolationMode.BILINEAR
    )
    expected = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float() / 255
    assert torch.allclose(sample["image"], expected, atol=1 / 255 + 1e-6)


def test_cocostuff_small_crop_and_limit(coco_root: Path) -> None:
    ds = CocoStuff27(coco_root, curated=coco_root / "curated.txt", crop=64, limit=1)
    assert len(ds) == 1
    assert ds[0]["gt"].shape == (1, 64, 64) and ds[0]["image"].shape == (3, 64, 64)


def test_cocostuff_errors(coco_root: Path) -> None:
    shipped = CocoStuff27(coco_root)  # the shipped list: most files missing, each fails alone
    assert len(shipped) == 2175
    with pytest.raises(ImageReadError, match="000000000724.jpg: no such file"):
        shipped[shipped.ids.index("000000000724")]
    (coco_root / "annotations" / "val2017" / "000000000139.png").unlink()
    with pytest.raises(SampleReadError, match="000000000139.png: ground truth missing"):
        shipped[shipped.ids.index("000000000139")]
    with pytest.raises(ValueError, match="curated"):
        CocoStuff27(coco_root, split="train2017")
    write_jpg(coco_root / "images_only" / "images" / "val2017" / "000000000139.jpg", 8, 8)
    with pytest.raises(DatasetError, match="found no directory annotations/val2017"):
        CocoStuff27(coco_root / "images_only")
    gt_path = coco_root / "annotations" / "val2017" / "000000000285.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(gt_path)
    with pytest.raises(SampleReadError) as info:
        CocoStuff27(coco_root, curated=coco_root / "curated.txt")[1]
    assert str(info.value).startswith(str(gt_path))


# --- plain folders and helpers --------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_jpg(root / "b.jpg", 10, 30)
    Image.fromarray(np.full((8, 6, 3), 200, np.uint8)).save(root / "A.PNG")
    (root / "trip").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "trip" / "day1.bmp")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"junk")
    return root


def test_image_folder(folder_root: Path) -> None:
    ds = ImageFolder(folder_root)
    assert ds.ids == ["A", "b"]
    sample = ds[0]
    assert sample["gt"].shape == (0, 8, 6) and sample["gt"].dtype == torch.int64
    assert sample["size"] == (8, 6) and sample["path"] == str(folder_root / "A.PNG")
    assert torch.allclose(sample["image"], torch.full((3, 8, 6), 200 / 255))
    assert ImageFolder(folder_root, recursive=True).ids == ["A", "b", "trip__day1"]
    resized = ImageFolder(folder_root, max_side=15, limit=2)[1]
    assert resized["image"].shape == (3, 5, 15) and resized["size"] == (10, 30)


def test_image_folder_errors(folder_root: Path) -> None:
    (folder_root / "empty").mkdir()
    with pytest.raises(DatasetError, match="found none") as info:
        ImageFolder(folder_root / "empty")
    assert str(folder_root / "empty") in str(info.value)
    with pytest.raises(DatasetError, match="no such directory"):
        ImageFolder(folder_root / "missing")
    (folder_root / "broken.jpg").write_bytes(b"not a jpeg")
    ds = ImageFolder(folder_root)
    with pytest.raises(ImageReadError) as info:
        ds[ds.ids.index("broken")]
    assert str(info.value).startswith(str(folder_root / "broken.jpg"))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder_root / "b.png")
    with pytest.raises(DatasetError, match="both give id 'b'"):
        ImageFolder(folder_root)
    with pytest.raises(ValueError, match="limit must be"):
        ImageFolder(folder_root, limit=0)


def test_resize_long_side() -> None:
    image = np.zeros((300, 600, 3), np.uint8)
    assert resize_long_side(image, 200).shape == (100, 200, 3)
    assert resize_long_side(image, None) is image
    assert resize_long_side(image, 600) is image
    with pytest.raises(ValueError, match="max_side"):
        resize_long_side(image, 0)
