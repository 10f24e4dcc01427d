"""Issue 14, items 2 and 3: run folders resume only with their own config (checked before anything is
written), restore their best checkpoint relative to where they are now, and never pick a stale file."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recpie.cli import main
from recpie.config import ExperimentConfig, load_experiment
from recpie.errors import CheckpointError, ConfigError
from recpie.recipes.trained_run import best_checkpoint
from recpie.utils.checkpoints import FolderCheckpoint, checkpoint_callbacks, recorded_best, resume_from
from recpie.utils.run_folder import MAY_CHANGE, accept_run_folder

SCHEMA = OmegaConf.structured(ExperimentConfig)


def _trained_folder(tmp_path: Path, *overrides: str) -> tuple[Path, Path]:
    """A run folder as the runner leaves it: config.yaml and a checkpoint; returns (run_dir, config.yaml)."""
    cfg = load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}", *overrides])
    run_dir = tmp_path / cfg.name
    (run_dir / "tb" / "backbone_seed0" / "checkpoints").mkdir(parents=True)
    (run_dir / "tb" / "backbone_seed0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    return run_dir, run_dir / "config.yaml"


def test_new_folder_and_same_config_are_accepted(tmp_path):
    cfg = load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}"])
    assert accept_run_folder(tmp_path / "new", cfg, SCHEMA) is False
    run_dir, _ = _trained_folder(tmp_path)
    # keys that may change: a moved folder, more epochs, more seeds, another test checkpoint, eval settings
    same = load_experiment("nyc_baselines", ["run.output_dir=/elsewhere", "train.max_epochs=40",
                                             "run.seeds=[0,1,2,3]", "eval.topk=50", "recpie.test_checkpoint=last"])
    assert accept_run_folder(run_dir, same, SCHEMA) is True
    assert all(reason for reason in MAY_CHANGE.values())


@pytest.mark.parametrize("override", ["train.lr=0.05", "backbone.hidden_size=32", "data.max_len=20",
                                      "run.fast=true", "data.drop_duplicates=false"])
def test_changed_config_is_refused_naming_the_keys(tmp_path, override):
    run_dir, _ = _trained_folder(tmp_path)
    cfg = load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}", override])
    with pytest.raises(ConfigError, match=rf"another config \({override.split('=')[0]}: .* -> "):
        accept_run_folder(run_dir, cfg, SCHEMA)


def test_refused_resume_writes_nothing(tmp_path, capsys):
    run_dir, saved = _trained_folder(tmp_path)
    before = saved.read_bytes()
    assert main(["run", "nyc_baselines", f"run.output_dir={tmp_path}", "train.lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.002 -> 0.05" in err and "Traceback" not in err
    assert saved.read_bytes() == before and not (run_dir / "provenance.json").exists()


def test_resume_false_on_a_trained_folder_is_refused_saying_how_to_proceed(tmp_path):
    run_dir, _ = _trained_folder(tmp_path)
    cfg = load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}", "run.resume=false"])
    with pytest.raises(ConfigError, match="run.resume=false: set run.resume=true to continue it, or to start over"):
        accept_run_folder(run_dir, cfg, SCHEMA)
    (run_dir / "config.yaml").unlink()
    with pytest.raises(ConfigError, match="no config.yaml"):
        accept_run_folder(run_dir, load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}"]), SCHEMA)


def _callback_state(folder: Path, best: str, score: float) -> dict:
    return {"monitor": "val/mrr", "best_model_score": torch.tensor(score), "best_model_path": str(folder / best),
            "current_score": torch.tensor(score), "dirpath": str(folder), "kth_value": torch.tensor(score),
            "best_k_models": {str(folder / best): torch.tensor(score)}, "kth_best_model_path": str(folder / best),
            "last_model_path": ""}


def test_restored_state_points_into_the_folder_it_is_in_now(tmp_path):
    old, new = tmp_path / "original", tmp_path / "copy"
    callback = checkpoint_callbacks(new, "val/mrr")[0]
    assert isinstance(callback, FolderCheckpoint) and callback.state_key.startswith("ModelCheckpoint{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning warns "dirpath has changed" and drops the best score
        callback.load_state_dict(_callback_state(old, "best-epoch=3.ckpt", 0.45))
    assert callback.best_model_path == str(new / "best-epoch=3.ckpt")
    assert float(callback.best_model_score) == pytest.approx(0.45)
    assert list(callback.best_k_models) == [str(new / "best-epoch=3.ckpt")]


def test_best_is_the_recorded_one_never_a_stale_or_foreign_file(tmp_path):
    folder = tmp_path / "run" / "checkpoints" / "recpie-seed0"
    folder.mkdir(parents=True)
    state = {"callbacks": {"ModelCheckpoint{'monitor': 'val/mrr'}": _callback_state(
        Path("/somewhere/else"), "best-epoch=1.ckpt", 0.4)}}
    torch.save(state, folder / "last.ckpt")
    for name in ("best-epoch=1.ckpt", "best-epoch=9.ckpt", "best-epoch=9-v1.ckpt"):  # the later ones are stale
        (folder / name).write_bytes(b"x")
    assert recorded_best(folder) == folder / "best-epoch=1.ckpt"
    assert best_checkpoint(tmp_path / "run", 0) == folder / "best-epoch=1.ckpt"
    (folder / "best-epoch=1.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"names best-epoch=1\.ckpt as the best checkpoint, but .* is missing"):
        recorded_best(folder)
    (folder / "last.ckpt").write_bytes((folder / "best-epoch=9.ckpt").read_bytes())  # truncated, e.g. disk full
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        recorded_best(folder)
    with pytest.raises(CheckpointError, match="did it train seed 1"):
        best_checkpoint(tmp_path / "run", 1)


def test_resume_needs_a_whole_last_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    assert resume_from(last, resume=True) is None  # nothing to resume: a fresh start
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 3}, last)
    assert resume_from(last, resume=True) == str(last) and resume_from(last, resume=False) is None
    whole = last.read_bytes()
    for cut in (whole[: len(whole) // 2], whole[:-10], b""):  # a full disk truncates it
        last.write_bytes(cut)
        with pytest.raises(CheckpointError, match=r"cannot resume: .*last\.ckpt is truncated or corrupt.*delete it"):
            resume_from(last, resume=True)


def test_config_from_an_older_version_names_the_key_it_no_longer_knows(tmp_path):
    run_dir, saved = _trained_folder(tmp_path)
    saved.write_text(saved.read_text().replace("rl:\n", "rl:\n  temperature: 1.0\n"))  # a key issue 16 removed
    cfg = load_experiment("nyc_baselines", [f"run.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"config.yaml sets rl.temperature, which this version .* no longer has"):
        accept_run_folder(run_dir, cfg, SCHEMA)
