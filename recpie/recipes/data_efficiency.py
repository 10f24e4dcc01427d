"""The data-efficiency study: how the recommender and the room for explanations move with the training data.

Per train fraction (``efficiency.fractions``, drawn as ``data.train_fraction_unit`` under
``data.train_fraction_seed``) and per seed: the backbone trained on the kept targets only (val-MRR
checkpoint, tested on every test sample) and the prompt-information bound of that backbone (the facts reader
of recpie.explainer.information: how much a reader of the explainer's prompt can add to the backbone's
order). Per fraction, Markov counts the kept steps only. The training-free counters read every check-in and
are the same at every fraction: they are the curve's horizontal lines.

Each (fraction, seed) point is saved under ``points/`` as soon as it is done (npz + JSON) and never
recomputed, and its backbone resumes from its own ``last.ckpt``: an interrupted study resumes where it
stopped. Writes ``results.md``, ``results.json`` and ``data_efficiency.png``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from data_modules import CheckinDataModule
from recpie.components.baselines import DecayedCounter, Markov
from recpie.config import data_config, run_seeds, with_setting
from recpie.data.fraction import kept_summary
from recpie.data.load import train_fraction_data
from recpie.data.types import CheckinData
from recpie.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_ci
from recpie.evaluation.ranking import metrics_from_ranks
from recpie.evaluation.scoring import rank_split
from recpie.explainer.information import facts_bound, facts_version
from recpie.recipes.baselines import fit_backbone, fit_moved_on, slug, tune_counter
from recpie.reporting.data_efficiency import METRICS, write_results
from recpie.reporting.study_points import COUNTERS, point_name, read_point, write_point
from recpie.utils.seeds import subset_ids

log = logging.getLogger(__name__)


def fit_folder(run_dir: Path, fraction: float, setting: str, seed: int) -> Path:
    """Where a backbone of the study trains: one folder per (fraction, search setting, seed)."""
    where = run_dir / f"f{fraction:g}"
    return (where / slug(setting) if setting else where) / f"backbone_seed{seed}"


def search_trial(cfg: DictConfig, dm: CheckinDataModule, fraction: float, setting: str, run_dir: Path) -> dict:
    """Seed 0 of one search setting at one fraction: its val MRR (what the search selects on), test MRR,
    epochs and fit seconds; saved as a point when done (computed again when a raised budget trains its fit
    on), its backbone kept for the seed-0 point."""
    name = f"search_f{fraction:g}_{slug(setting)}"
    stored = read_point(run_dir, name)
    folder, trial_cfg = fit_folder(run_dir, fraction, setting, 0), with_setting(cfg, setting)
    if stored and not fit_moved_on(trial_cfg, folder, stored[0]["epochs"]):
        return stored[0]
    fit = fit_backbone(trial_cfg, dm, 0, folder)
    meta = {"fraction": fraction, "setting": setting, "best_val_mrr": fit["best_val_mrr"],
            "test_mrr": metrics_from_ranks(fit["ranks"], ["mrr"])["mrr"], "epochs": fit["epochs"],
            "fit_seconds": fit["fit_seconds"]}
    if rank_zero_only.rank == 0:
        write_point(run_dir, name, meta, {"ranks": np.asarray(fit["ranks"], dtype=np.float64)})
    return meta


def chosen_setting(cfg: DictConfig, dm: CheckinDataModule, fraction: float, run_dir: Path) -> tuple[str, list]:
    """The search setting with the best seed-0 val MRR at ``fraction`` (the first on a tie; "" without a
    search: the config's own) and every trial's record."""
    trials = [search_trial(cfg, dm, fraction, s, run_dir) for s in cfg.efficiency.search]
    if not trials:
        return "", []
    best = max(trials, key=lambda t: t["best_val_mrr"])  # max keeps the first of equals
    log.info("f%g: search setting %r has the best val MRR (%.4f)", fraction, best["setting"], best["best_val_mrr"])
    return best["setting"], trials


def fraction_point(cfg: DictConfig, dm: CheckinDataModule, fraction: float, seed: int, run_dir: Path,
                   setting: str = "") -> dict:
    """One (fraction, seed): the backbone's test ranks and the facts reader's, from disk when already done.

    ``setting``: the search's choice at this fraction (the backbone trains with it). A point whose bound
    was read with other prompt facts (``facts_version``: older ones, or the other explainer.show_scores)
    keeps its backbone numbers and has its bound recomputed from the backbone's checkpoint (a finished fit
    is not trained again); a point of another setting, or whose fit trained on since or trains on under a
    raised budget (``fit_moved_on``), is computed again."""
    name = point_name(fraction, seed)
    point = read_point(run_dir, name)
    stored = {**point[0], **point[1]} if point else {}
    if stored.get("setting", "") != setting:
        log.info("f%g seed %d: the point was fitted with setting %r, the search chose %r: fitting it",
                 fraction, seed, stored.get("setting", ""), setting)
        stored = {}
    if setting:
        cfg = with_setting(cfg, setting)
    folder = fit_folder(run_dir, fraction, setting, seed)
    if stored and fit_moved_on(cfg, folder, stored["epochs"]):
        log.info("f%g seed %d: the fit trains on (a raised budget) or did; computing the point again", fraction, seed)
        stored = {}
    if stored.get("facts_version") == facts_version(cfg.explainer):
        return stored
    if stored:
        log.info("f%g seed %d: the bound was read with older prompt facts; recomputing it", fraction, seed)
    fit = fit_backbone(cfg, dm, seed, folder)
    data, e = dm.checkins, cfg.efficiency
    val_ids = subset_ids(len(data.splits["val"]), e.bound_val_samples, cfg.recpie.subset_seed).numpy()
    test_ids = subset_ids(len(data.splits["test"]), e.bound_test_samples, cfg.recpie.subset_seed).numpy()
    bound = facts_bound(fit["module"].backbone, data, cfg, val_ids, test_ids)
    fitted = {"ranks": np.asarray(fit["ranks"], dtype=np.float64), "epochs": fit["epochs"],
              "fit_seconds": fit["fit_seconds"], "best_val_mrr": fit["best_val_mrr"]}
    if stored:  # the point's record (fits older than fit_seconds in their checkpoints would report 0)
        fitted = {k: stored[k] for k in fitted}
    arrays = {"ranks": fitted.pop("ranks"), "bound_ids": test_ids, "bound_backbone": bound["backbone"],
              "bound_reader": bound["reader"]}
    meta = {"fraction": fraction, "seed": seed, "setting": setting, **fitted,
            "reader_val_fitted": bound["val_fitted"], "facts_version": facts_version(cfg.explainer)}
    if rank_zero_only.rank == 0:
        write_point(run_dir, name, meta, arrays)
    return {**meta, **arrays}


def training_free_lines(cfg: DictConfig, data: CheckinData, run_dir: Path) -> dict[str, np.ndarray]:
    """Test ranks of the design note's counter and the val-tuned time-aware one (saved with the points)."""
    stored = read_point(run_dir, COUNTERS)
    if stored:
        names, arrays = stored
        return {name: arrays[f"line{i}"] for i, name in enumerate(names)}
    bc, chunk = cfg.baselines, cfg.eval.chunk_size
    timed, _ = tune_counter(data, list(bc.decay_grid), list(bc.bandwidth_grid_h), chunk_size=chunk)
    timed.name = f"{timed.name}, val-tuned"
    lines = {m.name: rank_split(m.score, data, "test", chunk, 1)[0]
             for m in (DecayedCounter(bc.counter_decay).fit(data), timed)}
    if rank_zero_only.rank == 0:
        write_point(run_dir, COUNTERS, list(lines), {f"line{i}": r for i, r in enumerate(lines.values())})
    return lines


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    base = data_config(cfg)
    seeds = run_seeds(cfg)
    e = cfg.eval
    boot = dict(n_boot=e.bootstrap_samples, level=e.bootstrap_level, seed=e.bootstrap_seed)
    full = CheckinDataModule(dataclasses.replace(base, train_fraction=1.0))
    full.prepare_data()
    full.setup()
    lines = training_free_lines(cfg, full.checkins, run_dir)
    timed = list(lines)[-1]

    modules = {}
    for fraction in map(float, cfg.efficiency.fractions):
        dm = CheckinDataModule(dataclasses.replace(base, train_fraction=fraction))
        dm.data = train_fraction_data(full.checkins, fraction, base.train_fraction_unit, base.train_fraction_seed,
                                      "efficiency.fractions")
        modules[fraction] = dm  # the processed data is read once; each fraction only draws its mask
    # the search first (seed 0 of every setting at every fraction), then seed-major: an interrupted study has
    # every fraction of the first seeds rather than every seed of a few
    search = {f: chosen_setting(cfg, dm, f, run_dir) for f, dm in modules.items()}
    points = {(f, seed): fraction_point(cfg, dm, f, seed, run_dir, search[f][0])
              for seed in seeds for f, dm in modules.items()}
    rows = []
    for fraction, dm in modules.items():
        markov, _ = rank_split(Markov().fit(dm.checkins).score, dm.checkins, "test", e.chunk_size, 1)
        pts = [points[fraction, seed] for seed in seeds]
        ranks = np.stack([p["ranks"] for p in pts])
        reader, bb_bound = np.stack([p["bound_reader"] for p in pts]), np.stack([p["bound_backbone"] for p in pts])
        per_seed = [metrics_from_ranks(r, METRICS) for r in ranks]
        rows.append({
            "fraction": fraction, "kept": kept_summary(dm.checkins), "seeds": seeds,
            "backbone": {m: [float(np.mean([s[m] for s in per_seed])), float(np.std([s[m] for s in per_seed]))]
                         for m in METRICS},
            "backbone_ci": {m: bootstrap_ci(ranks, m, **boot) for m in ("acc@10", "mrr")},
            "markov": metrics_from_ranks(markov, METRICS),
            "reader_mrr": float(np.mean([metrics_from_ranks(r, ["mrr"])["mrr"] for r in reader])),
            "bound": paired_bootstrap_ci(reader, bb_bound, "mrr", **boot),
            "minus_timed": paired_bootstrap_ci(ranks, lines[timed], "mrr", **boot),
            "fit_seconds": [p["fit_seconds"] for p in pts], "epochs": [p["epochs"] for p in pts],
            "bound_test_samples": len(pts[0]["bound_ids"]),
            "setting": search[fraction][0], "search": search[fraction][1],
        })
    results = {"fractions": rows, "unit": base.train_fraction_unit, "draw_seed": base.train_fraction_seed,
               "lines": {name: metrics_from_ranks(r, METRICS) for name, r in lines.items()},
               "line_ci": {name: {m: bootstrap_ci(r, m, **boot) for m in ("acc@10", "mrr")}
                           for name, r in lines.items()},
               "samples": {k: len(v) for k, v in full.checkins.splits.items()}}
    if rank_zero_only.rank != 0:
        return results
    write_results(cfg, results, run_dir)
    log.info("wrote %s", run_dir / "results.md")
    return results
