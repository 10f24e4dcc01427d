"""Checkpoint callbacks every recipe uses: the best on a val metric, and the latest for resuming.

Lightning's ``save_last=True`` only refreshes last.ckpt when a top-k checkpoint is written, so after an
epoch without improvement it would point at an older epoch; a second, monitor-less callback keeps
``last.ckpt`` at the end of every epoch (after its validation), which is where runs resume.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """[best by ``monitor`` (max), latest as last.ckpt]; ``trainer.checkpoint_callback`` is the first."""
    best = ModelCheckpoint(dirpath=dirpath, monitor=monitor, mode="max", filename="best-{epoch}")
    latest = ModelCheckpoint(dirpath=dirpath, filename="last", enable_version_counter=False)
    return [best, latest]
