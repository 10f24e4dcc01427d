"""The LightningDataModule of check-in data, for every source in ``recpie.data.sources.SOURCES``.

``setup`` loads the processed data through the disk cache (``prepare_data`` fills it once, on one
process). Train batches are sequence windows; val/test batches are one protocol sample per row;
``sample_dataloader(split)`` gives sample batches of any split, the protocol's train targets included.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.batches import SampleDataset, StepStream, WindowDataset, to_tensors
from recpie.data.config import DataConfig, resolve
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData


class CheckinDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = resolve(cfg)
        self.data: CheckinData | None = None

    def prepare_data(self) -> None:
        load_checkin_data(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = load_checkin_data(self.cfg)

    @property
    def checkins(self) -> CheckinData:
        if self.data is None:
            raise RuntimeError("CheckinDataModule.setup() has not run: call dm.setup() first")
        return self.data

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=to_tensors, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0)

    def train_dataloader(self, steps_per_epoch: int = 0, seed: int = 0) -> DataLoader:
        """Train windows with at least one kept target. ``steps_per_epoch`` 0: each epoch one shuffled pass;
        else each epoch ``steps_per_epoch`` batches of a seeded endless stream of passes (StepStream)."""
        dataset = WindowDataset(self.checkins, self.cfg.max_len, self.cfg.train_targets,
                                self.cfg.history_summary)
        if not steps_per_epoch:
            return self._loader(dataset, self.cfg.batch_size, shuffle=True)
        sampler = StepStream(len(dataset), self.cfg.batch_size, steps_per_epoch, seed)
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler, collate_fn=to_tensors,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)

    def sample_dataloader(self, split: str) -> DataLoader:
        """Sample batches of "train" (protocol train targets), "val" or "test", in sample order."""
        if split not in self.checkins.splits:
            raise KeyError(f"split {split!r} unknown; use one of {sorted(self.checkins.splits)}")
        return self._loader(SampleDataset(self.checkins, split, self.cfg.max_len,
                                                  self.cfg.history_summary), self.cfg.eval_batch_size,
                            shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.sample_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.sample_dataloader("test")
