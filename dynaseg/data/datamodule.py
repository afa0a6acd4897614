"""The Lightning side of the datasets: one image per step, sharded across processes without
padding, and unreadable items turned into failure records instead of crashing the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, …``: every image exactly once over all ranks.

    Lightning's default ``DistributedSampler`` pads the last shard with repeated images, which
    would count them twice in the metrics (method.md §3c).
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
    """Wraps a dataset so that an item that cannot be read yields ``{"id", "error"}``.

    The message of the datasets' and image reader's exceptions starts with the file path, so the
    failure record names the file and the cause.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except Exception as error:  # noqa: BLE001 - any bad item must not end the run
            item_id = self.dataset.ids[index] if hasattr(self.dataset, "ids") else str(index)
            return {"id": item_id, "error": f"{type(error).__name__}: {error}"}


class SegmentationDataModule(LightningDataModule):
    """Feeds any of the framework's datasets to ``Trainer.test``, one unbatched sample a step.

    Args:
        dataset: a dataset returning ``dynaseg.data.Sample`` dicts (built from ``conf/dataset``).
        num_workers: DataLoader workers decoding images while the fits run.
    """

    def __init__(self, dataset: Dataset, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.num_workers = num_workers

    def test_dataloader(self) -> DataLoader:
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        )
        return DataLoader(
            SafeDataset(self.dataset),
            batch_size=None,
            sampler=ShardSampler(len(self.dataset), rank, world),
            num_workers=self.num_workers,
        )
