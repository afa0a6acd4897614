"""Datasets for DynaSeg: plain `torch.utils.data.Dataset`s that all return a `Sample` dict.

`BSDS500` and `VOC2012` feed the segment-wise best-IoU protocol, `CocoStuff27` the
Hungarian-matched mIoU protocol (docs/method.md §3); `ImageFolder` reads any folder without GT.
"""

from dynaseg.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    SampleReadError,
    SegmentationDataset,
    image_to_tensor,
    resize_long_side,
)
from dynaseg.data.bsds500 import BSDS500, read_bsds_mat
from dynaseg.data.cocostuff import COARSE_CLASS_NAMES, N_CLASSES, N_THINGS, CocoStuff27
from dynaseg.data.folder import IMAGE_EXTENSIONS, ImageFolder
from dynaseg.data.samples import sample_root
from dynaseg.data.voc import VOC2012

__all__ = [
    "BSDS500",
    "COARSE_CLASS_NAMES",
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "N_CLASSES",
    "N_THINGS",
    "VOC2012",
    "CocoStuff27",
    "DatasetError",
    "ImageFolder",
    "Sample",
    "SampleReadError",
    "SegmentationDataset",
    "image_to_tensor",
    "read_bsds_mat",
    "resize_long_side",
    "sample_root",
]
