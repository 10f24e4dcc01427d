"""The one Lightning Trainer factory of the recipes: ``cfg.trainer``'s hardware, val-MRR checkpoints
(best and last.ckpt, the run resumes from the latter) and TensorBoard events in a folder of the run."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from recpie.utils.checkpoints import checkpoint_callbacks

MONITOR = "val/mrr"


def make_trainer(cfg: DictConfig, log_dir: Path, checkpoint_dir: Path, max_epochs: int, *,
                 early_stopping_patience: int | None = None, limit_train_batches: float = 1.0,
                 gradient_clip_val: float | None = None, unused_parameters: bool = False,
                 distributed_sampler: bool = True) -> L.Trainer:
    """A Trainer writing TensorBoard events to ``log_dir`` and checkpoints to ``checkpoint_dir``.

    ``early_stopping_patience``: stop when val MRR has not improved for that many epochs (None: never).
    ``gradient_clip_val``: Lightning's clipping, for automatic optimisation only (None: off).
    ``unused_parameters``: under DDP, let some parameters get no gradient in a step (RecPIE's modules that a
    phase does not touch). ``distributed_sampler``: False when the loaders shard themselves over DDP ranks.
    """
    t = cfg.trainer
    strategy = "ddp_find_unused_parameters_true" if unused_parameters and t.strategy == "ddp" else t.strategy
    callbacks = checkpoint_callbacks(checkpoint_dir, MONITOR)
    if early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=early_stopping_patience))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=strategy, precision=t.precision,
        num_nodes=t.num_nodes, max_epochs=max_epochs, limit_train_batches=limit_train_batches,
        gradient_clip_val=gradient_clip_val, num_sanity_val_steps=0, callbacks=callbacks,
        logger=TensorBoardLogger(log_dir.parent, name="", version=log_dir.name),
        log_every_n_steps=t.log_every_n_steps, use_distributed_sampler=distributed_sampler,
        enable_model_summary=False)
