"""A backbone checkpoint records the supervision draw of its training data (data.train_fraction, unit, seed),
and a backbone loaded into a config's data is refused when that data is another draw: its transition prior
comes from the kept train steps, so it would rank differently from its fit (a 25% study checkpoint read
with the full data gave test MRR 0.4699 instead of 0.4601)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import prompt_information
from data_modules import CheckinDataModule
from recpie.config import ExperimentConfig, data_config
from recpie.errors import CheckpointError
from recpie.recipes.baselines import fit_backbone
from recpie.recipes.recpie import warm_backbone
from recpie.utils.checkpoints import DRAW_KEY, load_checkpoint, recorded_draw

TINY = ["data.max_len=8", "data.batch_size=64", "data.eval_batch_size=1024", "backbone.hidden_size=16",
        "backbone.num_layers=1", "backbone.num_heads=1", "run.fast=true", "train.fast_max_epochs=1",
        "train.fast_limit_batches=0.02", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1"]
QUARTER = {"fraction": 0.25, "unit": "targets", "seed": 0}


def tiny_cfg(data_root: Path, *extra: str):
    return OmegaConf.merge(OmegaConf.structured(ExperimentConfig),
                           OmegaConf.from_dotlist([*TINY, f"data.data_root={data_root}", *extra]))


def datamodule(cfg) -> CheckinDataModule:
    dm = CheckinDataModule(data_config(cfg))
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def quarter_fit(data_root, tmp_path_factory):
    """A tiny backbone fitted on 25% of the train targets: (its config, data module, fit, test ids, ranks)."""
    cfg = tiny_cfg(data_root, "data.train_fraction=0.25")
    dm = datamodule(cfg)
    fit = fit_backbone(cfg, dm, 0, tmp_path_factory.mktemp("quarter"))
    ids, ranks, _ = fit["module"].results["test"]
    return cfg, dm, fit, torch.as_tensor(ids), ranks


def from_checkpoint(cfg, dm, path, tmp_path, test_ids) -> np.ndarray:
    """The test ranks of the backbone that recpie.backbone_checkpoint=path gives under ``cfg``."""
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"recpie.backbone_checkpoint={path}"]))
    return warm_backbone(cfg, dm, 0, tmp_path, test_ids)[1]


def test_a_fit_on_a_fraction_records_its_draw(quarter_fit):
    _, _, fit, _, _ = quarter_fit
    folder = Path(fit["best_checkpoint"]).parent
    for path in (fit["best_checkpoint"], folder / "last.ckpt"):
        assert recorded_draw(load_checkpoint(path, "test")) == QUARTER


def test_the_recorded_draw_loads_the_backbone_as_fitted(quarter_fit, tmp_path):
    cfg, dm, fit, ids, ranks = quarter_fit
    np.testing.assert_array_equal(from_checkpoint(cfg, dm, fit["best_checkpoint"], tmp_path, ids), ranks)


def test_another_draw_is_refused_naming_the_fix(quarter_fit, data_root, tmp_path):
    _, _, fit, ids, _ = quarter_fit
    full = tiny_cfg(data_root)
    with pytest.raises(CheckpointError, match=r"recpie.backbone_checkpoint: .*best-epoch=0.ckpt was trained on "
                       r"data.train_fraction=0.25, .* this config's data is data.train_fraction=1.0 .*"
                       r"pass data.train_fraction=0.25 \("):
        from_checkpoint(full, datamodule(full), fit["best_checkpoint"], tmp_path, ids)
    seed1 = tiny_cfg(data_root, "data.train_fraction=0.25", "data.train_fraction_seed=1")
    with pytest.raises(CheckpointError, match=r"pass data.train_fraction_seed=0 \("):
        from_checkpoint(seed1, datamodule(seed1), fit["best_checkpoint"], tmp_path, ids)


def test_a_checkpoint_without_the_record_loads_with_a_warning(quarter_fit, data_root, tmp_path, caplog):
    """Older files load as before, unchecked: right with the right fraction, silently off with another."""
    cfg, dm, fit, ids, ranks = quarter_fit
    old = load_checkpoint(fit["best_checkpoint"], "test")
    del old[DRAW_KEY]
    torch.save(old, tmp_path / "old.ckpt")
    with caplog.at_level(logging.WARNING, logger="recpie.utils.checkpoints"):
        loaded = from_checkpoint(cfg, dm, tmp_path / "old.ckpt", tmp_path, ids)
    np.testing.assert_array_equal(loaded, ranks)
    assert "old.ckpt does not record the training data's supervision draw" in caplog.text
    assert "data.train_fraction=0.25" in caplog.text  # the config's draw, unchecked
    full = tiny_cfg(data_root)
    with caplog.at_level(logging.WARNING, logger="recpie.utils.checkpoints"):
        unchecked = from_checkpoint(full, datamodule(full), tmp_path / "old.ckpt", tmp_path, ids)
    assert not np.array_equal(unchecked, ranks)  # the trap the record closes: the full data's prior


def test_prompt_information_refuses_a_study_backbone_without_its_fraction(quarter_fit, data_root):
    """The benchmark that printed the full data's MRR for a 25% study backbone now stops before any work."""
    _, _, fit, _, _ = quarter_fit
    argv = ["--backbone", fit["best_checkpoint"], "--config", "nyc_recpie", f"data.data_root={data_root}"]
    with pytest.raises(CheckpointError, match=r"--backbone: .* pass data.train_fraction=0.25 \("):
        prompt_information.main(argv)
