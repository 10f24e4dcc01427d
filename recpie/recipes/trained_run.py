"""Reopen a finished ``recpie`` run: its config, data and the best RecPIE checkpoint of one seed."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recpie.components.backbone import Backbone
from recpie.config import ExperimentConfig, data_config, validate
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData
from recpie.errors import CheckpointError
from recpie.models.recpie_module import RecPIEModule
from recpie.utils.checkpoints import load_checkpoint, recorded_best


def best_checkpoint(run_dir: Path, seed: int) -> Path:
    """The seed's best RecPIE checkpoint by val MRR, as its last.ckpt recorded it, inside ``run_dir``."""
    folder = run_dir / "checkpoints" / f"recpie-seed{seed}"
    if not folder.is_dir():
        raise CheckpointError(f"no RecPIE checkpoints in {folder}: is {run_dir} the directory of a finished "
                              f"'recpie' run (e.g. results/default), and did it train seed {seed}?")
    return recorded_best(folder)


def load_trained_run(run_dir: str | Path, seed: int | None = None) -> tuple[DictConfig, CheckinData, RecPIEModule]:
    """(config, data, module in eval mode) of ``run_dir``; the seed defaults to the run's first."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}/config.yaml not found: pass the directory of a run (results/<NAME>)")
    cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(run_dir / "config.yaml"))
    validate(cfg)
    seed = cfg.run.seeds[0] if seed is None else seed
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    module = RecPIEModule(cfg, data, backbone, eval_ids={}, seed=seed)
    module.configure_model()
    path = best_checkpoint(run_dir, seed)
    checkpoint = load_checkpoint(path, f"the best checkpoint of {run_dir}")
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    module.on_load_checkpoint(checkpoint)
    return cfg, data, module.eval()
