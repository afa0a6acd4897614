"""The Lightning side of the datasets: one image per step, sharded across processes without
padding, and unreadable or oversized items turned into failure records instead of crashing the
run."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from dynaseg.data.base import DatasetError
from dynaseg.images import ImageReadError


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, …``: every image exactly once over all ranks.

    Lightning's default ``DistributedSampler`` pads the last shard with repeated images, which
    would count them twice in the metrics (docs/method.md §3c).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class SafeDataset(Dataset):
    """Wraps a dataset so that an item that cannot be used yields ``{"id", "error"}``.

    The error is one line naming the file and the cause: the datasets' and the image reader's
    messages already start with the file path. An image is also refused when the model input
    (after ``max_side``) has more than ``max_pixels`` pixels: the fit keeps hundreds of float
    activations and gradients per pixel, so such an image would exhaust memory mid-run. Decoding
    itself is bounded earlier by the image reader (``dynaseg.images.DEFAULT_MAX_PIXELS``,
    checked on the header, before any pixel is decoded: decompression bombs).

    Args:
        dataset: any dataset of the framework (it has ``ids``).
        max_pixels: most pixels a fit may process; ``None``: no limit.
    """

    def __init__(self, dataset: Dataset, max_pixels: int | None = None) -> None:
        self.dataset = dataset
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id = self.dataset.ids[index] if hasattr(self.dataset, "ids") else str(index)
        try:
            sample = self.dataset[index]
        except (ImageReadError, DatasetError) as error:  # the message starts with the path
            return {"id": item_id, "error": str(error)}
        except Exception as error:  # noqa: BLE001 - any bad item must not end the run
            return {"id": item_id, "error": f"{item_id}: {type(error).__name__}: {error}"}
        height, width = sample["image"].shape[-2:]
        if self.max_pixels is not None and height * width > self.max_pixels:
            return {
                "id": item_id,
                "error": (
                    f"{sample['path']}: the model input is {width}x{height} = "
                    f"{height * width:,} pixels, above max_pixels={self.max_pixels:,}, so its "
                    "fit would exhaust memory; downscale it with "
                    f"dataset.max_side={math.isqrt(self.max_pixels)} (or less), or raise "
                    "max_pixels"
                ),
            }
        return sample


class SegmentationDataModule(LightningDataModule):
    """Feeds any of the framework's datasets to ``Trainer.test``, one sample per step.

    Args:
        dataset: a dataset returning ``dynaseg.data.Sample`` dicts (built from ``conf/dataset``).
        num_workers: DataLoader workers decoding images while the fits run.
        max_pixels: most pixels one fit may process (see :class:`SafeDataset`).
    """

    def __init__(
        self,
        dataset: Dataset,
        num_workers: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.num_workers = num_workers
        self.max_pixels = max_pixels

    def test_dataloader(self) -> DataLoader:
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        )
        return DataLoader(
            SafeDataset(self.dataset, self.max_pixels),
            batch_size=1,  # the pipeline fits same-size images together, across steps
            sampler=ShardSampler(len(self.dataset), rank, world),
            num_workers=self.num_workers,
            collate_fn=list,
        )
