"""Evaluation metrics for the protocols of docs/method.md §3, one module each.

The paper defines no equation for its scores, so these follow the protocols as restated in
``docs/protocols.md``:

* :mod:`~dynaseg.metrics.best_iou` -- :class:`SegmentBestIoU`, BSD500 / PASCAL VOC segment-wise
  best IoU of Kim et al. 2020 (C.5), prediction split into connected components first (C.6).
* :mod:`~dynaseg.metrics.regions` -- :class:`RegionMeasures`, the BSDS500 region benchmark of
  Arbelaez et al. 2011: segmentation covering, probabilistic Rand index, variation of information.
* :mod:`~dynaseg.metrics.hungarian` -- COCO-Stuff-27 Hungarian-matched mIoU, one matching for
  the dataset (:class:`DatasetHungarianIoU`, A.5) or one per image (:class:`ImageHungarianIoU`,
  A.7, F#2).
* :mod:`~dynaseg.metrics.base` -- what they share: connected components, contingency tables and
  the int64 sum states that make DDP and ``forward`` exact.

Each protocol has pure NumPy functions holding the maths and a torchmetrics ``Metric`` twin.
Call a twin (``metric(pred, gt)``, torchmetrics' ``forward``) for one image's scores, added to
the running state at the same time.
"""

from dynaseg.metrics.base import relabel_connected
from dynaseg.metrics.best_iou import SegmentBestIoU, best_iou_per_segment
from dynaseg.metrics.hungarian import (
    DatasetHungarianIoU,
    ImageHungarianIoU,
    hungarian_match,
    matched_scores,
)
from dynaseg.metrics.regions import (
    RegionMeasures,
    rand_index,
    segmentation_covering,
    variation_of_information,
)

__all__ = [
    "DatasetHungarianIoU",
    "ImageHungarianIoU",
    "RegionMeasures",
    "SegmentBestIoU",
    "best_iou_per_segment",
    "hungarian_match",
    "matched_scores",
    "rand_index",
    "relabel_connected",
    "segmentation_covering",
    "variation_of_information",
]
