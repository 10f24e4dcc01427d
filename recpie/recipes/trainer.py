"""The one Lightning Trainer factory of the recipes: ``cfg.trainer``'s hardware, val-MRR checkpoints
(best and last.ckpt, the run resumes from the latter) and TensorBoard events in a folder of the run."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from recpie.utils.checkpoints import checkpoint_callbacks, load_checkpoint, recorded_best

MONITOR = "val/mrr"
log = logging.getLogger(__name__)


class ConfiguredEarlyStopping(EarlyStopping):
    """EarlyStopping that keeps the configured patience on resume: Lightning's restores the patience saved in
    the checkpoint, so a longer patience asked for on a finished run would be silently ignored. Checked at the
    end of validation (before the checkpoints are written), so last.ckpt holds its state after that epoch."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


def finished_fit(folder: Path, max_epochs: int, patience: int | None) -> str | None:
    """Why the fit whose checkpoints are in ``folder`` needs no more training under this budget (a sentence
    for the log), or None when it must train: no checkpoint yet, interrupted, or stopped by a budget that
    was since raised (logged, since it then trains on).

    Read from last.ckpt (written after every epoch's validation) and the best epoch it records: the fit is
    over once ``patience`` epochs passed without a val MRR gain, which is early stopping's own rule. Lightning
    saves no "stopped" flag, so a resumed early-stopped fit would otherwise train another epoch and go on
    whenever val MRR rose."""
    last = folder / "last.ckpt"
    if not last.is_file():
        return None
    checkpoint = load_checkpoint(last, "the run's last checkpoint")
    done = int(checkpoint.get("epoch", -1)) + 1  # epochs completed
    recorded = recorded_best(folder, MONITOR, must_exist=False)
    best = re.fullmatch(r"best-epoch=(\d+)\.ckpt", recorded.name)
    without_gain = done - 1 - int(best.group(1)) if best else 0
    if patience is not None and without_gain >= max(patience, 1):  # Lightning stops at wait_count >= patience
        finished = f"stopped early after {done} epochs, {without_gain} without a val MRR gain"
    elif done >= max_epochs:
        finished = f"reached max_epochs ({done} epochs)"
    else:
        finished = None
    if finished:
        recorded_best(folder, MONITOR)  # the finished fit's best file must be there: an error naming it if not
        return finished
    log.info("%s: %d epochs done (%d without a val MRR gain): training on to max_epochs=%d, patience=%s",
             folder, done, without_gain, max_epochs, patience)
    return None


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
        callbacks.append(ConfiguredEarlyStopping(monitor=MONITOR, mode="max", patience=early_stopping_patience,
                                                 check_on_train_epoch_end=False))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=strategy, precision=t.precision,
        num_nodes=t.num_nodes, max_epochs=max_epochs, limit_train_batches=limit_train_batches,
        gradient_clip_val=gradient_clip_val, num_sanity_val_steps=0, callbacks=callbacks,
        logger=TensorBoardLogger(log_dir.parent, name="", version=log_dir.name),
        log_every_n_steps=t.log_every_n_steps, use_distributed_sampler=distributed_sampler,
        enable_model_summary=False)
