"""Recipe ``recpie``: the joint method against its own backbone, on the same samples, per seed.

Per seed:
1. warm-up: the backbone alone (``train`` section), or the checkpoint ``recpie.backbone_checkpoint``;
2. control: from that backbone, ``recpie.cycles`` x ``recpie.rec_steps_per_cycle`` recommender steps with
   the null explanation only ("its own backbone": extra training alone must not count as a gain);
3. RecPIE: from the same backbone, the same recommender steps with explanations, alternating with the
   explainer's format warm-up and PPO (``recpie.ppo_iterations=0``: the frozen-explainer ablation).
Both are scored on the same fixed test samples (``recpie.test_samples``, seeded by
``recpie.subset_seed``); results.md holds the tables, paired bootstrap CIs, explanation quality, sample
explanations and the cost (wall time, explanations generated, peak memory). Per seed, attribution_seed{S}.png
shows the test MRR with the own / null / another sample's explanation and cycle_trends_seed{S}.png the
per-cycle reward, KL, parse and EOS rates and fusion gate from the TensorBoard events (recpie.reporting.recpie).
test_ranks_seed{S}.npz keeps every test rank (and a verdict run's per-sample verdicts), val_verdicts_seed{S}.npz a
verdict run's per-sample val verdicts (benchmarks/verdict_information.py --split val: the gate after a
warm-up); with ``recpie.sft_eval_every`` warmup_curve_seed{S}.json/.csv hold the warm-up curve (agreement with
the facts teacher and hit rates on val per warm-up examples), also a table of results.md; results.md and
results.json report what a fitted fusion fitted before each cycle; with
``recpie.reference_study`` results.md also compares RecPIE with a data-efficiency study's models
(recpie.reporting.reference_study).
"""
from __future__ import annotations

import copy
import resource
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler

from data_modules.batches import SampleDataset, to_tensors
from data_modules.checkin import CheckinDataModule
from recpie.components.backbone import Backbone
from recpie.config import data_config, run_seeds, validate
from recpie.data.fraction import supervision_draw
from recpie.errors import CheckpointError
from recpie.evaluation import METRIC_NAMES, metrics_from_ranks, ranks_from_scores
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.export import write_topk_jsonl
from recpie.evaluation.verdicts import liked_target_share, verdict_pairs
from recpie.explainer.llm import describe_dtype
from recpie.explainer.prompts import context
from recpie.explainer.quality import QualityScorer
from recpie.models.cycle_sampler import CycleSampler
from recpie.models.recpie_module import RecPIEModule
from recpie.recipes.baselines import fit_backbone
from recpie.recipes.trainer import make_trainer
from recpie.reporting.recpie import SeedReport, seed_plots, write_results
from recpie.reporting.reference_study import check_reference_study, reference_lines
from recpie.utils.checkpoints import load_weights, resume_from
from recpie.utils.seeds import subset_ids


def warm_backbone(cfg: DictConfig, dm: CheckinDataModule, seed: int, out_dir: Path,
                  test_ids: torch.Tensor) -> tuple[Backbone, np.ndarray]:
    """The backbone both variants start from, and its test ranks on ``test_ids``: trained by the
    baselines recipe's loop (val-MRR checkpoint, resumable), or read from recpie.backbone_checkpoint, which
    must have been trained on this config's data.train_fraction draw (recpie.utils.checkpoints.check_draw)."""
    path = cfg.recpie.backbone_checkpoint
    draw = supervision_draw(dm.checkins) if path else None  # a backbone fitted here is fitted on this data
    ranks = None
    if not path:
        fitted = fit_backbone(cfg, dm, seed, out_dir)
        path, ranks = fitted["best_checkpoint"], fitted["ranks"][test_ids.numpy()]
    data = dm.checkins
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    try:
        backbone.load_state_dict(load_weights(path, "recpie.backbone_checkpoint", "backbone.", draw=draw))
    except RuntimeError as e:
        raise CheckpointError(f"recpie.backbone_checkpoint={path} does not fit this run's backbone (written by another "
                         "backbone config or an older version of it); retrain it with the same `backbone` and `data` "
                         f"sections, or leave the key empty to warm up a new one.\n{e}") from e
    if ranks is None:
        ranks = _score_backbone(backbone, data, test_ids, cfg)
    return backbone, ranks


@torch.no_grad()
def _score_backbone(backbone: Backbone, data, ids: torch.Tensor, cfg: DictConfig) -> np.ndarray:
    backbone.eval()
    dataset = SampleDataset(data, "test", cfg.data.max_len, cfg.data.history_summary)
    ranks = []
    for batch in _loader(dataset, ids, cfg.data.eval_batch_size):
        ranks.append(ranks_from_scores(backbone.score(backbone.user_state(batch), batch), batch["target"][:, -1]))
    return torch.cat(ranks).numpy()


def _loader(dataset, ids: torch.Tensor | None, batch_size: int, sampler=None, trainer=None) -> DataLoader:
    """Eval loaders (ids given) are sharded over DDP ranks; the evaluator dedupes the sampler's padding.

    Not CheckinDataModule's loaders: those cover a whole split (train: shuffled windows; val/test: every
    sample) at the data section's batch sizes and leave DDP sharding to Lightning. RecPIE trains on protocol
    train samples in the CycleSampler's order (it decides which samples get explained each cycle and shards
    itself, so the Trainer runs with use_distributed_sampler=False), scores fixed val/test subsets
    (``recpie.val_samples``/``test_samples``) and batches by ``recpie.generation_batch`` (generation-bound)."""
    subset = dataset if ids is None else torch.utils.data.Subset(dataset, ids.tolist())
    if sampler is None and trainer is not None and trainer.world_size > 1:
        sampler = DistributedSampler(subset, trainer.world_size, trainer.global_rank, shuffle=False)
    return DataLoader(subset, batch_size=batch_size, sampler=sampler, collate_fn=to_tensors)


def fit_variant(cfg, data, backbone, eval_ids, run_dir: Path, variant: str, seed: int) -> dict:
    """Train one variant from a copy of the warm backbone; return its test ranks and bookkeeping."""
    module = RecPIEModule(cfg, data, copy.deepcopy(backbone), eval_ids, seed,
                          curve_file=run_dir / f"warmup_curve_seed{seed}.json" if variant == "recpie" else None)
    events = run_dir / "tensorboard" / variant / f"seed{seed}"
    ckpt_dir = run_dir / "checkpoints" / f"{variant}-seed{seed}"
    trainer = make_trainer(cfg, events, ckpt_dir, cfg.recpie.cycles, unused_parameters=True, distributed_sampler=False)
    train = SampleDataset(data, "train", cfg.data.max_len, cfg.data.history_summary)
    rc = cfg.recpie
    sampler = CycleSampler(len(train), rc.rec_steps_per_cycle * rc.batch_size, seed, module.explainable,
                           rc.refresh_budget, rc.explained_share, rc.explained_draws,
                           trainer.global_rank, trainer.world_size)
    loaders = {"train": _loader(train, None, rc.batch_size, sampler)}
    for split in ("val", "test"):
        loaders[split] = _loader(SampleDataset(data, split, cfg.data.max_len, cfg.data.history_summary),
                                 eval_ids[split], rc.generation_batch, trainer=trainer)
    last = ckpt_dir / "last.ckpt"
    start = time.perf_counter()
    trainer.fit(module, loaders["train"], loaders["val"], ckpt_path=resume_from(last, cfg.run.resume),
                weights_only=True)
    tested = trainer.checkpoint_callback.best_model_path if rc.test_checkpoint == "best" else str(last)
    trainer.test(module, loaders["test"], ckpt_path=tested or None, verbose=False, weights_only=True)
    ids, ranks, topk = module.results["test/recpie"]
    return {
        "ids": ids, "ranks": ranks, "topk": topk, "seconds": time.perf_counter() - start,
        "null_ranks": module.results["test/null"][1], "other_ranks": module.results["test/other"][1],
        "texts": {i: module.store.texts["test"].get(int(i), []) for i in ids},
        "explained": int(sum(module.store.present[s].any(1).sum().item() for s in module.store.present)),
        "verdicts": module.results.get("test/verdicts"),
        "module": module, "events": events,
    }


def run(cfg: DictConfig, run_dir: Path) -> None:
    validate(cfg)  # again: a config changed after loading fails here, before any training
    check_reference_study(cfg.recpie.reference_study, cfg.recpie.test_samples, cfg.data.train_fraction,
                          run_seeds(cfg))
    dm = CheckinDataModule(data_config(cfg))
    dm.setup()
    data = dm.checkins
    eval_ids = {"val": subset_ids(len(data.splits["val"]), cfg.recpie.val_samples, cfg.recpie.subset_seed),
                "test": subset_ids(len(data.splits["test"]), cfg.recpie.test_samples, cfg.recpie.subset_seed)}
    per_seed: dict[str, list[dict]] = {"backbone (warm-up only)": [], "control (null explanations)": [],
                                       "RecPIE": []}
    reports: list[SeedReport] = []
    for seed in run_seeds(cfg):
        L.seed_everything(seed, workers=True)
        backbone, warm_ranks = warm_backbone(cfg, dm, seed, run_dir / "tensorboard" / f"warmup_seed{seed}",
                                             eval_ids["test"])
        control_cfg = copy.deepcopy(cfg)
        control_cfg.recpie.use_explanations = False
        control = fit_variant(control_cfg, data, backbone, eval_ids, run_dir, "control", seed)
        full = fit_variant(cfg, data, backbone, eval_ids, run_dir, "recpie", seed)
        for name, ranks in (("backbone (warm-up only)", warm_ranks), ("control (null explanations)",
                            control["ranks"]), ("RecPIE", full["ranks"])):
            per_seed[name].append({**metrics_from_ranks(ranks), "n": len(ranks)})
        write_topk_jsonl(run_dir / f"test_topk_recpie_seed{seed}.jsonl", full["ids"], full["topk"])
        full["per_sample_verdicts"] = per_sample_verdicts(cfg, data, full)
        val_verdicts = per_sample_verdicts(cfg, data, full, "val", eval_ids["val"].numpy())
        if rank_zero_only.rank == 0:  # every test rank (and verdict), for analyses outside the run; never pickled
            np.savez(run_dir / f"test_ranks_seed{seed}.npz", ids=np.asarray(full["ids"]), backbone=warm_ranks,
                     control=control["ranks"], recpie=full["ranks"], null=full["null_ranks"],
                     other=full["other_ranks"], **(full["per_sample_verdicts"] or {}))
            if val_verdicts is not None:
                np.savez(run_dir / f"val_verdicts_seed{seed}.npz", ids=eval_ids["val"].numpy(), **val_verdicts)
        reports.append(_seed_report(cfg, data, seed, control, full, run_dir))
        dtype = explainer_dtype(cfg, full["module"])
    write_results(cfg, data, run_dir, per_seed, reports, n_test=len(eval_ids["test"]), seeds=run_seeds(cfg),
                  peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, explainer_dtype=dtype)
    if rank_zero_only.rank == 0:  # after results.md, so that a failing plot cannot cost the tables
        for report in reports:
            seed_plots(report, run_dir)


def explainer_dtype(cfg: DictConfig, module: RecPIEModule) -> str:
    """The dtype the module's explainer was loaded in and why, for results.md (from the loaded model itself)."""
    ex = module.explainer
    if ex is None:
        return "no explainer (recpie.use_explanations=false)"
    return describe_dtype(cfg.explainer.dtype, ex.model.dtype, ex.device)


def per_sample_verdicts(cfg: DictConfig, data, full: dict, split: str = "test", ids: np.ndarray | None = None
                        ) -> dict[str, np.ndarray] | None:
    """With the verdict encoder (whose embedding is each candidate's ("may like", "may not like") share), per
    sample of ``split`` in ``ids`` order (default: the test samples in ``full["ids"]`` order): ``verdicts``
    [n, K, 2], the ``candidates`` [n, K] they are about (-1: none stored), their ``logits`` [n, K] (what a
    prompt of explainer.show_scores states; NaN: none stored) and ``liked_target`` [n], the "may like" share
    on the target. None with other encoders."""
    if cfg.explainer.encoder != "verdict":
        return None
    store, k = full["module"].store, cfg.explainer.num_candidates
    ids = np.asarray(full["ids"] if ids is None else ids)
    z, _ = store.get(split, torch.as_tensor(ids), torch.device("cpu"))
    verdicts = verdict_pairs(z, k)
    candidates = torch.tensor([store.candidates[split].get(int(i), [-1] * k) for i in ids]).view(len(ids), k)
    target = torch.as_tensor(data.poi[data.splits[split].target[ids]])
    logits = np.array([store.logits[split].get(int(i), [np.nan] * k) for i in ids], dtype=np.float32).reshape(-1, k)
    return {"verdicts": verdicts.numpy(), "candidates": candidates.numpy(), "logits": logits,
            "liked_target": liked_target_share(verdicts[..., 0], candidates, target).numpy()}


def _seed_report(cfg, data, seed: int, control: dict, full: dict, run_dir: Path) -> SeedReport:
    """Every number of the seed's section: CIs against the control, the attribution, explanation quality."""
    e = cfg.eval
    boot = dict(n_boot=e.bootstrap_samples, level=e.bootstrap_level, seed=e.bootstrap_seed)
    store = full["module"].store
    ids = [int(i) for i in full["ids"] if int(i) in store.texts["test"]]
    contexts = [context(data, "test", i, store.candidates["test"][i], cfg.explainer, store.logits["test"].get(i))
                for i in ids for _ in store.texts["test"][i]]
    texts = [t for i in ids for t in store.texts["test"][i]]
    # attribution: the trained RecPIE model on the same samples fed its own, the null and another's explanation
    fed = {"own explanation": full["ranks"], "null explanation": full["null_ranks"],
           "another sample's explanation": full["other_ranks"]}
    return SeedReport(
        seed=seed, vs_control=[paired_bootstrap_ci(full["ranks"], control["ranks"], m, **boot) for m in METRIC_NAMES],
        fed={name: metrics_from_ranks(ranks) for name, ranks in fed.items()},
        own_vs={name: paired_bootstrap_ci(full["ranks"], fed[name], "mrr", **boot) for name in list(fed)[1:]},
        verdicts=full.get("verdicts"), fusion=list(full["module"].fusion_fits),
        warmup_curve=list(full["module"].explainer_trainer.curve), ppo_iterations=cfg.recpie.ppo_iterations,
        quality=QualityScorer(data).report(texts, contexts, run_dir / f"test_explanations_seed{seed}.jsonl"),
        seconds={"RecPIE": full["seconds"], "control": control["seconds"]}, explained=full["explained"],
        examples={i: full["texts"][i] for i in list(full["texts"])[:3]}, events=full["events"],
        reference=reference_lines(Path(study), cfg.data.train_fraction, seed, np.asarray(full["ids"]),
                                  full["ranks"], (full["per_sample_verdicts"] or {}).get("liked_target"), boot)
        if (study := cfg.recpie.reference_study)
        else [])
