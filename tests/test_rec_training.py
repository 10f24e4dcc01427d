"""Backbone training: API shapes, resume at an epoch boundary, and DDP over two gloo processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data_modules import CheckinDataModule
from data_modules.batches import SampleDataset, StepStream, WindowDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.components.config import TrainConfig
from recpie.config import ExperimentConfig, data_config
from recpie.data.fraction import with_train_fraction
from recpie.errors import CheckpointError
from recpie.evaluation import ranks_from_scores
from recpie.models.recommender_module import (
    RecommenderModule,
    lr_factor,
    sample_ends_trajectory,
    target_loss_weight,
    window_ends,
)
from recpie.recipes.baselines import fit_backbone
from recpie.recipes.trainer import finished_fit

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.max_len=8", "data.batch_size=64", "backbone.hidden_size=16", "backbone.num_layers=1",
         "backbone.num_heads=1", "run.fast=true", "train.fast_limit_batches=0.02", "trainer.accelerator=cpu",
         "trainer.log_every_n_steps=1"]


def small_cfg(data_root: Path, *extra: str):
    cfg = OmegaConf.structured(ExperimentConfig)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist([*SMALL, f"data.data_root={data_root}", *extra]))


@pytest.fixture(scope="module")
def small_dm(data_root):
    dm = CheckinDataModule(data_config(small_cfg(data_root)))
    dm.setup()
    return dm


def test_backbone_api_is_consistent(synthetic_data):
    cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.from_dotlist(SMALL))
    torch.manual_seed(0)
    bb = Backbone(cfg.backbone, synthetic_data, 8).eval()
    batch = to_tensors(SampleDataset(synthetic_data, "test", 8, summary=True).__getitems__(list(range(12))))
    with torch.no_grad():
        h = bb.user_state(batch)
        logits = bb.score(h, batch)
        full = bb(batch)
    assert h.shape == (12, bb.hidden_size) and logits.shape == (12, bb.num_pois) == (12, 6)
    torch.testing.assert_close(full[:, -1], logits)  # the last position of forward() is score(user_state)
    assert not torch.allclose(bb.score(h + 1.0, batch), logits)  # score is a function of h (for fusion)
    visited = batch["poi"][0][batch["mask"][0]]
    copy_only = bb.score(h, batch) - bb.score(h, {**batch, "mask": torch.zeros_like(batch["mask"])})
    assert (copy_only[0, visited] != 0).all()  # the copy path reaches every POI of the history


def test_trajectory_end_weight_marks_targets_that_end_a_trajectory(small_dm):
    data = small_dm.checkins
    batch = next(iter(small_dm.train_dataloader()))
    visited = torch.ones_like(batch["mask"], dtype=torch.bool)  # no new-POI factor: the end weight alone
    w = target_loss_weight(window_ends(batch, 24 * 3600.0), visited, TrainConfig(trajectory_end_weight=5.0))
    # rebuild each target's check-in index from (user, time) and compare with the trajectory ids
    checked = 0
    for b in range(len(batch["user"])):
        u = int(batch["user"][b])
        times = data.time[data.user_start[u]:data.user_start[u + 1]]
        for j in range(batch["poi"].shape[1] - 1):
            if batch["target"][b, j] < 0:
                continue
            k = data.user_start[u] + int(np.searchsorted(times, int(batch["next_time"][b, j])))
            ends = k + 1 == len(data.poi) or data.trajectory[k + 1] != data.trajectory[k]
            assert float(w[b, j]) == (5.0 if ends else 1.0)
            checked += 1
    assert checked > 100 and float(w.max()) == 5.0


def test_sample_batches_get_the_windows_loss_weights(small_dm):
    """The joint phase's sample batches (last position only) weigh targets as the windows do: the windows'
    trajectory-end flag of a train target is the samples' flag of the same check-in."""
    data = small_dm.checkins
    ends = sample_ends_trajectory(data, "train").numpy()
    batch = next(iter(small_dm.train_dataloader()))
    w = window_ends(batch, 24 * 3600.0)
    target_index = {int(t): i for i, t in enumerate(data.splits["train"].target)}
    checked = 0
    for b in range(len(batch["user"])):
        u = int(batch["user"][b])
        times = data.time[data.user_start[u]:data.user_start[u + 1]]
        for j in range(batch["poi"].shape[1] - 1):  # the windows know the flag except at the last position
            if batch["target"][b, j] < 0:
                continue
            k = data.user_start[u] + int(np.searchsorted(times, int(batch["next_time"][b, j])))
            if k in target_index:
                assert bool(ends[target_index[k]]) == bool(w[b, j]), (b, j)
                checked += 1
    assert checked > 100 and 0.05 < ends.mean() < 0.5
    tc = TrainConfig(trajectory_end_weight=5.0, new_poi_weight=0.3)
    weight = target_loss_weight(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False]), tc)
    torch.testing.assert_close(weight, torch.tensor([5.0, 1.5, 1.0, 0.3]))


@pytest.mark.slow
def test_resume_at_epoch_boundary_matches_uninterrupted_run(small_dm, data_root, tmp_path):
    straight = fit_backbone(small_cfg(data_root, "train.fast_max_epochs=2"), small_dm, 0, tmp_path / "a")
    fit_backbone(small_cfg(data_root, "train.fast_max_epochs=1"), small_dm, 0, tmp_path / "b")
    # issue 14: a run folder moved between invocations keeps its best score and tests its own files
    shutil.move(tmp_path / "b", tmp_path / "c")
    resumed = fit_backbone(small_cfg(data_root, "train.fast_max_epochs=2"), small_dm, 0, tmp_path / "c")
    assert straight["epochs"] == resumed["epochs"] == 2
    assert straight["best_val_mrr"] == pytest.approx(resumed["best_val_mrr"], abs=1e-6)
    np.testing.assert_allclose(straight["ranks"], resumed["ranks"])
    shutil.copytree(tmp_path / "c", tmp_path / "d")  # an unchanged copy re-run: no training, the same test
    shutil.rmtree(tmp_path / "c")
    again = fit_backbone(small_cfg(data_root, "train.fast_max_epochs=2"), small_dm, 0, tmp_path / "d")
    assert again["best_checkpoint"].startswith(str(tmp_path / "d" / "checkpoints"))
    assert again["best_val_mrr"] == pytest.approx(straight["best_val_mrr"], abs=1e-6)
    np.testing.assert_allclose(again["ranks"], straight["ranks"])
    assert len((tmp_path / "a" / "test_topk.jsonl").read_text().splitlines()) == len(straight["ranks"])


DDP_SCRIPT = r'''
import json, sys
from pathlib import Path
import torch.distributed as dist
from omegaconf import OmegaConf
from data_modules import CheckinDataModule
from data_modules.batches import SampleDataset, to_tensors
from recpie.config import ExperimentConfig, data_config
from recpie.recipes.baselines import fit_backbone
out = Path(sys.argv[1])
cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.from_dotlist(sys.argv[2:]))
dm = CheckinDataModule(data_config(cfg))
dm.setup()
res = fit_backbone(cfg, dm, 0, out)
if not dist.is_initialized() or dist.get_rank() == 0:
    result = {"ranks": res["ranks"].tolist(), "ckpt": res["best_checkpoint"]}
    (out / "result.json").write_text(json.dumps(result))
'''


@pytest.mark.slow
def test_ddp_two_cpu_processes_evaluate_every_sample_once(small_dm, data_root, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    args = [*SMALL, f"data.data_root={data_root}", "train.fast_max_epochs=1", "trainer.devices=2",
            "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    cfg = small_cfg(data_root)
    module = RecommenderModule.load_from_checkpoint(
        result["ckpt"], backbone_cfg=cfg.backbone, train_cfg=cfg.train, eval_cfg=cfg.eval,
        data=small_dm.checkins, max_len=8).eval()
    ranks = []
    with torch.no_grad():
        for batch in small_dm.test_dataloader():
            scores = module.backbone.score(module.backbone.user_state(batch), batch)
            ranks.append(ranks_from_scores(scores, batch["target"][:, -1]))
    assert len(result["ranks"]) == len(small_dm.checkins.splits["test"])
    np.testing.assert_allclose(result["ranks"], torch.cat(ranks).numpy())


def checkpoint_files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "checkpoints").glob("*.ckpt"))}


@pytest.mark.slow
def test_a_finished_fit_stays_finished(small_dm, data_root, tmp_path):
    """Issue 23: an early-stopped fit run again trains nothing and reports the same numbers; only a raised
    patience trains on. lr 1e-12 leaves the weights as they are, so val MRR never rises after epoch 0."""
    frozen = ["train.lr=1e-12", "train.weight_decay=0", "train.fast_max_epochs=6"]
    first = fit_backbone(small_cfg(data_root, *frozen, "train.patience=1"), small_dm, 0, tmp_path / "run")
    assert first["epochs"] == 2  # epoch 0 best, epoch 1 without a gain: patience 1 spent
    files = checkpoint_files(tmp_path / "run")
    again = fit_backbone(small_cfg(data_root, *frozen, "train.patience=1"), small_dm, 0, tmp_path / "run")
    assert checkpoint_files(tmp_path / "run") == files  # no checkpoint written, none rewritten
    np.testing.assert_array_equal(again["ranks"], first["ranks"])
    assert {k: again[k] for k in ("epochs", "best_val_mrr", "best_checkpoint", "fit_seconds")} == \
        {k: first[k] for k in ("epochs", "best_val_mrr", "best_checkpoint", "fit_seconds")}
    assert first["fit_seconds"] > 0
    longer = fit_backbone(small_cfg(data_root, *frozen, "train.patience=3"), small_dm, 0, tmp_path / "run")
    assert longer["epochs"] == 4  # trained on until 3 epochs without a gain
    assert longer["fit_seconds"] > first["fit_seconds"]
    assert longer["best_checkpoint"] == first["best_checkpoint"]


def test_step_stream_epochs_depend_on_seed_and_epoch_only():
    stream = StepStream(n=10, batch_size=3, steps=4, seed=7)  # 12 indices an epoch: more than one pass
    epochs = []
    for epoch in range(5):
        stream.set_epoch(epoch)
        epochs.append(list(stream))
    assert all(len(e) == 12 for e in epochs)
    flat = np.concatenate(epochs)  # 60 draws = 6 whole passes, each a permutation of the 10 windows
    assert all(sorted(flat[i:i + 10]) == list(range(10)) for i in range(0, 60, 10))
    replay = StepStream(n=10, batch_size=3, steps=4, seed=7)
    replay.set_epoch(3)  # a resumed run asks for epoch 3 directly
    assert list(replay) == epochs[3]
    other = StepStream(n=10, batch_size=3, steps=4, seed=8)
    assert list(other) != epochs[0]


def test_windows_without_a_kept_target_are_not_drawn(nyc_data):
    full = WindowDataset(nyc_data, 50, "all_steps")
    kept = WindowDataset(with_train_fraction(nyc_data, 0.03, "targets", 0), 50, "all_steps")
    assert len(full) == 2191 and len(kept) == 1365  # NYC: 826 windows hold none of the 3% of targets
    batch = kept.__getitems__(list(range(len(kept))))
    assert ((batch["target"] >= 0).sum(axis=1) > 0).all()


def test_learning_rate_schedule_in_steps():
    tc = TrainConfig(warmup_steps=4, decay_steps=10, min_lr_ratio=0.1)
    assert [lr_factor(s, tc) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, tc) == pytest.approx(1.0)
    assert lr_factor(9, tc) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_factor(14, tc) == pytest.approx(0.1) and lr_factor(1000, tc) == pytest.approx(0.1)
    assert lr_factor(0, TrainConfig()) == 1.0 and lr_factor(10**6, TrainConfig()) == 1.0


def test_target_logits_equal_the_whole_window_logits_at_the_targets(nyc_data):
    """The low-fraction loss path: each target's window cut and shifted to end at it scores as the full pass."""
    cfg = small_cfg(Path("."), "backbone.hidden_size=32", "backbone.num_heads=2")
    data = with_train_fraction(nyc_data, 0.12, "targets", 0)
    windows = WindowDataset(data, 50, "all_steps", summary=True)
    batch = to_tensors(windows.__getitems__(list(range(0, 320, 10))))
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, data, 50).eval()
    with torch.no_grad():
        full = backbone(batch)
        sparse, (rows, pos) = backbone.target_logits(batch)
    assert len(rows) == int((batch["target"] >= 0).sum()) > 20
    assert len(pos.unique()) > 10 and (~batch["mask"]).any()  # targets at many positions, left-padded windows
    torch.testing.assert_close(sparse, full[rows, pos], atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_a_kill_between_the_new_best_and_last_ckpt_resumes(small_dm, data_root, tmp_path):
    """The best callback writes the new best and deletes the old one before last.ckpt is rewritten: killed
    in between, last.ckpt names a deleted file. An unfinished fit then resumes from last.ckpt (which writes
    the best again); only a finished one needs the file, and the error names it."""
    fit = fit_backbone(small_cfg(data_root, "train.fast_max_epochs=1"), small_dm, 0, tmp_path)
    Path(fit["best_checkpoint"]).unlink()
    assert finished_fit(tmp_path / "checkpoints", max_epochs=3, patience=3) is None  # resumes, no refusal
    with pytest.raises(CheckpointError, match="best-epoch=0.ckpt as the best checkpoint, but"):
        finished_fit(tmp_path / "checkpoints", max_epochs=1, patience=3)


@pytest.mark.slow
def test_a_best_checkpoint_left_by_a_killed_invocation_is_overwritten(small_dm, data_root, tmp_path):
    """Killed after writing best-epoch=0.ckpt but before last.ckpt: the resumed fit writes that name again,
    not a stray best-epoch=0-v1.ckpt beside a stale file."""
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "checkpoints" / "best-epoch=0.ckpt").write_bytes(b"left by the killed invocation")
    fit = fit_backbone(small_cfg(data_root, "train.fast_max_epochs=1"), small_dm, 0, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["best-epoch=0.ckpt", "last.ckpt"]
    assert Path(fit["best_checkpoint"]).name == "best-epoch=0.ckpt"
    torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)  # the new one, whole
