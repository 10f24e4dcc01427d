"""Reopen a finished ``recpie`` run: its config, data and the best RecPIE checkpoint of one seed."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from recpie.components.backbone import Backbone
from recpie.config import ExperimentConfig, data_config
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData
from recpie.models.recpie_module import RecPIEModule


def best_checkpoint(run_dir: Path, seed: int) -> Path:
    folder = run_dir / "checkpoints" / f"recpie-seed{seed}"
    found = sorted(folder.glob("best-*.ckpt")) or sorted(folder.glob("last.ckpt"))
    if not found:
        raise FileNotFoundError(f"no RecPIE checkpoint in {folder}: is {run_dir} the directory of a finished "
                                "'recpie' run (e.g. results/default)?")
    return found[-1]


def load_trained_run(run_dir: str | Path, seed: int | None = None) -> tuple[DictConfig, CheckinData, RecPIEModule]:
    """(config, data, module in eval mode) of ``run_dir``; the seed defaults to the run's first."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}/config.yaml not found: pass the directory of a run (results/<NAME>)")
    cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(run_dir / "config.yaml"))
    seed = cfg.run.seeds[0] if seed is None else seed
    cfg.data.seed = seed
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    module = RecPIEModule(cfg, data, backbone, eval_ids={})
    module.configure_model()
    checkpoint = torch.load(best_checkpoint(run_dir, seed), map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    module.on_load_checkpoint(checkpoint)
    return cfg, data, module.eval()
