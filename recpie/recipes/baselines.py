"""Every baseline and the backbone on one dataset: per-seed and mean +- std tables, breakdowns, CIs.

The counters, Markov and most-popular models are deterministic: they run once and say so. The
backbone trains once per seed (``run.seeds``), selects its checkpoint on val MRR and is tested on the
full test split. Writes ``results.md``, ``results.json``, ``test_metrics.png`` (recpie.reporting.baselines),
per-model top-K JSONL under ``predictions/`` and TensorBoard logs under ``tb/``.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from data_modules import CheckinDataModule
from recpie.components.baselines import DecayedCounter, Markov, MostPopular
from recpie.config import data_config, run_seeds
from recpie.data.types import CheckinData
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.breakdowns import breakdown, split_targets, standard_groups
from recpie.evaluation.export import write_topk_jsonl
from recpie.evaluation.ranking import metrics_from_ranks
from recpie.evaluation.scoring import rank_split
from recpie.models.recommender_module import RecommenderModule
from recpie.recipes.trainer import MONITOR, finished_fit, make_trainer
from recpie.reporting.baselines import write_results
from recpie.utils.checkpoints import load_checkpoint, recorded_best, resume_from

log = logging.getLogger(__name__)
CI_METRICS = ("acc@1", "acc@10", "mrr")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def fit_backbone(cfg: DictConfig, dm: CheckinDataModule, seed: int, out_dir: Path) -> dict:
    """Train one seed (an interrupted fit resumes from its last.ckpt), test its best checkpoint; returns
    ranks, the fit's record and the module (best weights).

    A finished fit is not trained again (``finished_fit``): the same command twice gives the same numbers,
    and the record (epochs, best val MRR, fit seconds) is read from last.ckpt either way. A raised
    ``train.max_epochs`` or ``train.patience`` (both in ``MAY_CHANGE``) trains on from last.ckpt, and says so."""
    L.seed_everything(seed, workers=True, verbose=False)
    module = RecommenderModule(cfg.backbone, cfg.train, cfg.eval, dm.checkins, cfg.data.max_len, seed,
                               export_path=out_dir / "test_topk.jsonl",
                               session_gap_hours=dm.cfg.session_gap_hours)
    tc = cfg.train
    max_epochs, batches = fit_budget(cfg)
    trainer = make_trainer(cfg, out_dir, out_dir / "checkpoints", max_epochs, early_stopping_patience=tc.patience,
                           limit_train_batches=batches, gradient_clip_val=tc.grad_clip or None)
    last = out_dir / "checkpoints" / "last.ckpt"
    finished = finished_fit(last.parent, max_epochs, tc.patience) if cfg.run.resume else None
    if finished is None:
        trainer.fit(module, train_dataloaders=dm.train_dataloader(tc.steps_per_epoch, seed),
                    val_dataloaders=dm.val_dataloader(), ckpt_path=resume_from(last, cfg.run.resume),
                    weights_only=True)
    else:
        log.info("%s: the fit is finished (%s); testing its best checkpoint", out_dir, finished)
    record = fit_record(out_dir / "checkpoints")
    trainer.test(module, dataloaders=dm.test_dataloader(), ckpt_path=record["best_checkpoint"], verbose=False,
                 weights_only=True)
    ids, ranks, _ = module.results["test"]
    return {"ranks": ranks, **record, "module": module}


def fit_budget(cfg: DictConfig) -> tuple[int, float]:
    """(max_epochs, limit_train_batches) of a fit under ``cfg`` (run.fast shortens both)."""
    tc = cfg.train
    return (tc.fast_max_epochs, tc.fast_limit_batches) if cfg.run.fast else (tc.max_epochs, 1.0)


def fit_moved_on(cfg: DictConfig, out_dir: Path, epochs: int) -> bool:
    """Whether a saved result of the fit in ``out_dir``, computed after ``epochs`` epochs, no longer
    describes it: its checkpoints say it trains on under ``cfg``'s budget (a raised train.max_epochs or
    train.patience), or they hold another number of epochs (another result trained it on). A folder
    without checkpoints (a results folder copied without them) keeps its saved results."""
    folder = out_dir / "checkpoints"
    if not cfg.run.resume or not (folder / "last.ckpt").is_file():
        return False
    if finished_fit(folder, fit_budget(cfg)[0], cfg.train.patience) is None:
        return True
    return int(load_checkpoint(folder / "last.ckpt", "the run's last checkpoint")["epoch"]) + 1 != epochs


def fit_record(folder: Path) -> dict:
    """What the last.ckpt of a backbone's checkpoint folder says of its fit: epochs done, best checkpoint
    (in ``folder``, wherever the run was first written) and its val MRR, seconds spent fitting."""
    best = recorded_best(folder, MONITOR)
    checkpoint = load_checkpoint(folder / "last.ckpt", "the run's last checkpoint")
    score = next(s["best_model_score"] for k, s in checkpoint["callbacks"].items()
                 if k.startswith("ModelCheckpoint") and s.get("monitor") == MONITOR)
    return {"best_val_mrr": float(score), "epochs": int(checkpoint["epoch"]) + 1, "best_checkpoint": str(best),
            "fit_seconds": float(checkpoint.get("fit_seconds", 0.0))}


def tune_counter(data: CheckinData, decays: list[float], bandwidths: list[float | None],
                 metric_rank: str = "mrr", chunk_size: int = 512) -> tuple[DecayedCounter, dict]:
    """Pick the (decay, bandwidth) with the best val MRR; returns the fitted model and the grid's scores."""
    grid = {}
    best, best_val = None, -1.0
    for bw in bandwidths:
        for decay in decays:
            model = DecayedCounter(decay, bw).fit(data)
            ranks, _ = rank_split(model.score, data, "val", chunk_size, topk=1)
            val = metrics_from_ranks(ranks, [metric_rank])[metric_rank]
            grid[f"decay={decay}, bandwidth={bw}"] = val
            if val > best_val:
                best, best_val = model, val
    return best, grid


def counter_runs(cfg: DictConfig, data: CheckinData) -> dict[str, dict]:
    """The deterministic baselines: val/test ranks and top-K of each, tuned ones tuned on val MRR."""
    bc = cfg.baselines
    tuned, grid = tune_counter(data, list(bc.decay_grid), [None], chunk_size=cfg.eval.chunk_size)
    timed, tgrid = tune_counter(data, list(bc.decay_grid), list(bc.bandwidth_grid_h),
                                chunk_size=cfg.eval.chunk_size)
    models = [MostPopular().fit(data), DecayedCounter(bc.counter_decay).fit(data), tuned, timed,
              Markov().fit(data)]
    tuned.name, timed.name = f"{tuned.name}, val-tuned", f"{timed.name}, val-tuned"
    out = {}
    for model in models:
        val, _ = rank_split(model.score, data, "val", cfg.eval.chunk_size, 1)
        test, topk = rank_split(model.score, data, "test", cfg.eval.chunk_size, cfg.eval.topk)
        out[model.name] = {"val": val, "test": test, "topk": topk}
    out[tuned.name]["grid"], out[timed.name]["grid"] = grid, tgrid
    return out


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    dm = CheckinDataModule(data_config(cfg))
    dm.prepare_data()
    dm.setup()
    data = dm.checkins
    seeds = run_seeds(cfg)
    is_main = rank_zero_only.rank == 0  # under DDP every process runs the recipe; one writes the files
    targets = split_targets(data, "test")
    groups = standard_groups(data, "test", cfg.eval.activity_bins)

    counters = counter_runs(cfg, data)
    if is_main:
        writer = SummaryWriter(run_dir / "tb" / "counters")
        for name, r in counters.items():
            write_topk_jsonl(run_dir / "predictions" / f"{slug(name)}_test.jsonl", np.arange(len(targets)),
                             r["topk"], targets, r["test"])
            for metric, value in metrics_from_ranks(r["test"]).items():
                writer.add_scalar(f"{slug(name)}/test/{metric}", value, 0)
        writer.close()
    best_counter = max(counters, key=lambda n: metrics_from_ranks(counters[n]["val"], ["mrr"])["mrr"])

    backbone = {seed: fit_backbone(cfg, dm, seed, run_dir / "tb" / f"backbone_seed{seed}") for seed in seeds}
    bb_ranks = {s: r["ranks"] for s, r in backbone.items()}

    summary = {name: [metrics_from_ranks(r["test"])] for name, r in counters.items()}
    summary["backbone"] = [metrics_from_ranks(r) for r in bb_ranks.values()]
    cis = {s: [paired_bootstrap_ci(r, counters[best_counter]["test"], m, cfg.eval.bootstrap_samples,
                                   cfg.eval.bootstrap_level, cfg.eval.bootstrap_seed) for m in CI_METRICS]
           for s, r in bb_ranks.items()}
    if len(bb_ranks) > 1:  # the seed-mean model against the counter, per-sample metrics averaged over seeds
        cis["mean"] = [paired_bootstrap_ci(np.stack(list(bb_ranks.values())), counters[best_counter]["test"], m,
                                           cfg.eval.bootstrap_samples, cfg.eval.bootstrap_level,
                                           cfg.eval.bootstrap_seed) for m in CI_METRICS]
    breakdowns = {name: breakdown(r["test"], groups) for name, r in counters.items()}
    breakdowns.update({f"backbone seed {s}": breakdown(r, groups) for s, r in bb_ranks.items()})

    results = {
        "test": summary,
        "best_counter": best_counter,
        "backbone_runs": {s: {k: v for k, v in r.items() if k not in ("ranks", "module")}
                          for s, r in backbone.items()},
        "bootstrap": {s: [dataclasses.asdict(c) for c in cl] for s, cl in cis.items()},
        "breakdowns": breakdowns,
        "samples": {k: len(v) for k, v in data.splits.items()},
    }
    if not is_main:
        return results
    write_results(cfg, data, results, {name: r["grid"] for name, r in counters.items() if "grid" in r}, run_dir)
    log.info("wrote %s", run_dir / "results.md")
    return results
