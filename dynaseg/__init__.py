"""DynaSeg: unsupervised image segmentation by per-image CNN optimisation.

>>> from dynaseg import Segmenter  # doctest: +SKIP
>>> result = Segmenter(max_iter=200).fit(image_uint8_rgb, seed=0)  # doctest: +SKIP
>>> result.labels, result.n_clusters, result.stop_reason  # doctest: +SKIP
"""

from dynaseg.engine import SegmentationResult, Segmenter, image_seed

__all__ = ["SegmentationResult", "Segmenter", "image_seed"]
__version__ = "0.1.0"
