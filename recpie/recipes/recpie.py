"""Recipe ``recpie``: the joint method against its own backbone, on the same samples, per seed.

Per seed:
1. warm-up: the backbone alone (``train`` section), or the checkpoint ``recpie.backbone_checkpoint``;
2. control: from that backbone, ``recpie.cycles`` x ``recpie.rec_steps_per_cycle`` recommender steps with
   the null explanation only ("its own backbone": extra training alone must not count as a gain);
3. RecPIE: from the same backbone, the same recommender steps with explanations, alternating with the
   explainer's format warm-up and PPO (``recpie.ppo_iterations=0``: the frozen-explainer ablation).
Both are scored on the same fixed test samples (``recpie.test_samples``, seeded by
``recpie.subset_seed``); results.md holds the tables, paired bootstrap CIs, explanation quality, sample
explanations and the cost (wall time, explanations generated, peak memory).
"""
from __future__ import annotations

import copy
import json
import resource
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from data_modules.batches import SampleDataset, to_tensors
from data_modules.checkin import CheckinDataModule
from recpie.components.backbone import Backbone
from recpie.config import data_config, run_seeds
from recpie.data.stats import fraction_line
from recpie.errors import CheckpointError
from recpie.evaluation import METRIC_NAMES, metrics_from_ranks, ranks_from_scores
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.export import write_topk_jsonl
from recpie.evaluation.tables import ci_table, mean_std_table, metrics_table
from recpie.evaluation.verdicts import verdict_table
from recpie.explainer.prompts import context
from recpie.explainer.quality import QualityScorer
from recpie.models.cycle_sampler import CycleSampler
from recpie.models.recpie_module import RecPIEModule, explanation_samples, subset_ids
from recpie.recipes.baselines import fit_backbone
from recpie.utils.checkpoints import checkpoint_callbacks, load_weights, resume_from

HEADLINE = ("acc@1", "acc@10", "mrr")


def warm_backbone(cfg: DictConfig, dm: CheckinDataModule, seed: int, out_dir: Path,
                  test_ids: torch.Tensor) -> tuple[Backbone, np.ndarray]:
    """The backbone both variants start from, and its test ranks on ``test_ids``: trained by the
    baselines recipe's loop (val-MRR checkpoint, resumable), or read from recpie.backbone_checkpoint."""
    path = cfg.recpie.backbone_checkpoint
    ranks = None
    if not path:
        fitted = fit_backbone(cfg, dm, seed, out_dir)
        path, ranks = fitted["best_checkpoint"], fitted["ranks"][test_ids.numpy()]
    data = dm.checkins
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    try:
        backbone.load_state_dict(load_weights(path, "recpie.backbone_checkpoint", "backbone."))
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
    """Eval loaders (ids given) are sharded over DDP ranks; the evaluator dedupes the sampler's padding."""
    subset = dataset if ids is None else torch.utils.data.Subset(dataset, ids.tolist())
    if sampler is None and trainer is not None and trainer.world_size > 1:
        sampler = DistributedSampler(subset, trainer.world_size, trainer.global_rank, shuffle=False)
    return DataLoader(subset, batch_size=batch_size, sampler=sampler, collate_fn=to_tensors)


def _trainer(cfg: DictConfig, run_dir: Path, variant: str, seed: int) -> L.Trainer:
    t = cfg.trainer
    strategy = "ddp_find_unused_parameters_true" if t.strategy == "ddp" else t.strategy
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=strategy, precision=t.precision,
        num_nodes=t.num_nodes, max_epochs=cfg.recpie.cycles, log_every_n_steps=t.log_every_n_steps,
        logger=TensorBoardLogger(run_dir / "tensorboard", name=variant, version=f"seed{seed}"),
        callbacks=checkpoint_callbacks(run_dir / "checkpoints" / f"{variant}-seed{seed}", "val/mrr"),
        num_sanity_val_steps=0, use_distributed_sampler=False, enable_model_summary=False,
    )


def fit_variant(cfg, data, backbone, eval_ids, run_dir: Path, variant: str, seed: int) -> dict:
    """Train one variant from a copy of the warm backbone; return its test ranks and bookkeeping."""
    module = RecPIEModule(cfg, data, copy.deepcopy(backbone), eval_ids)
    trainer = _trainer(cfg, run_dir, variant, seed)
    train = SampleDataset(data, "train", cfg.data.max_len, cfg.data.history_summary)
    rc = cfg.recpie
    sampler = CycleSampler(len(train), rc.rec_steps_per_cycle * rc.batch_size, seed, module.explainable,
                           rc.refresh_budget, rc.explained_share, rc.explained_draws,
                           trainer.global_rank, trainer.world_size)
    loaders = {"train": _loader(train, None, rc.batch_size, sampler)}
    for split in ("val", "test"):
        loaders[split] = _loader(SampleDataset(data, split, cfg.data.max_len, cfg.data.history_summary),
                                 eval_ids[split], rc.generation_batch, trainer=trainer)
    ckpt_dir = run_dir / "checkpoints" / f"{variant}-seed{seed}"
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
        "module": module,
    }


def run(cfg: DictConfig, run_dir: Path) -> None:
    dm = CheckinDataModule(data_config(cfg))
    dm.setup()
    data = dm.checkins
    explanation_samples(cfg, data)  # bad explanation settings fail here, before the warm-up
    eval_ids = {"val": subset_ids(len(data.splits["val"]), cfg.recpie.val_samples, cfg.recpie.subset_seed),
                "test": subset_ids(len(data.splits["test"]), cfg.recpie.test_samples, cfg.recpie.subset_seed)}
    per_seed: dict[str, list[dict]] = {"backbone (warm-up only)": [], "control (null explanations)": [],
                                       "RecPIE": []}
    report: list[str] = []
    for seed in run_seeds(cfg):
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.data.seed = seed
        L.seed_everything(seed, workers=True)
        backbone, warm_ranks = warm_backbone(seed_cfg, dm, seed, run_dir / "tensorboard" / f"warmup_seed{seed}",
                                             eval_ids["test"])
        control_cfg = copy.deepcopy(seed_cfg)
        control_cfg.recpie.use_explanations = False
        control = fit_variant(control_cfg, data, backbone, eval_ids, run_dir, "control", seed)
        full = fit_variant(seed_cfg, data, backbone, eval_ids, run_dir, "recpie", seed)
        for name, ranks in (("backbone (warm-up only)", warm_ranks), ("control (null explanations)",
                            control["ranks"]), ("RecPIE", full["ranks"])):
            per_seed[name].append({**metrics_from_ranks(ranks), "n": len(ranks)})
        write_topk_jsonl(run_dir / f"test_topk_recpie_seed{seed}.jsonl", full["ids"], full["topk"])
        report += _seed_section(seed_cfg, data, seed, control, full, run_dir)
    _write_results(cfg, data, run_dir, per_seed, eval_ids, report)


def _seed_section(cfg, data, seed: int, control: dict, full: dict, run_dir: Path) -> list[str]:
    e = cfg.eval
    cis = [paired_bootstrap_ci(full["ranks"], control["ranks"], m, e.bootstrap_samples, e.bootstrap_level,
                               e.bootstrap_seed) for m in METRIC_NAMES]
    store = full["module"].store
    ids = [int(i) for i in full["ids"] if int(i) in store.texts["test"]]
    contexts = [context(data, "test", i, store.candidates["test"][i], cfg.explainer) for i in ids
                for _ in store.texts["test"][i]]
    texts = [t for i in ids for t in store.texts["test"][i]]
    quality = QualityScorer(data).report(texts, contexts, run_dir / f"test_explanations_seed{seed}.jsonl")
    lines = [f"## Seed {seed}", "",
             "RecPIE minus its own backbone (control), paired bootstrap over the same test samples:", "",
             ci_table(cis), "", *_attribution(cfg, full), *_verdict_lines(full.get("verdicts")),
             "Explanation quality (greedy, test samples):", "",
             metrics_table({"RecPIE": quality}, names=[k for k in quality if k != "n"], first="run"), "",
             f"Cost: RecPIE {full['seconds']:.0f} s, control {control['seconds']:.0f} s, "
             f"{full['explained']} samples explained.", "", "Sample explanations:", ""]
    for i in list(full["texts"])[:3]:
        lines.append(f"- test sample {int(i)} (user {data.user_ids[data.user[data.splits['test'].target[i]]]}): "
                     + " | ".join(full["texts"][i]))
    return [*lines, ""]


def _attribution(cfg, full: dict) -> list[str]:
    """Whether a gain is the explanations' content: the trained RecPIE model on the same test samples
    with each sample's own explanation, with the null one, and with another sample's."""
    scored = {"own explanation": full["ranks"], "null explanation": full["null_ranks"],
              "another sample's explanation": full["other_ranks"]}
    e = cfg.eval
    own_vs = {name: paired_bootstrap_ci(full["ranks"], scored[name], "mrr", e.bootstrap_samples,
                                        e.bootstrap_level, e.bootstrap_seed) for name in list(scored)[1:]}
    return ["The RecPIE model scored with each test sample's own explanation, with the null one, and with "
            "the explanation of the previous sample of its batch:", "",
            metrics_table({k: metrics_from_ranks(v) for k, v in scored.items()}, first="RecPIE model, fed"), "",
            "Own minus " + "; own minus ".join(f"{name.removesuffix(' explanation')}: MRR {ci.diff:+.4f} "
                                               f"[{ci.low:+.4f}, {ci.high:+.4f}]" for name, ci in own_vs.items())
            + ".", ""]


def _verdict_lines(v: dict | None) -> list[str]:
    """explainer.encoder=verdict: does "may like" know more than the recommender's ranking?"""
    if v is None:
        return []
    return [f"Verdicts ({v['parsed']:.0f} parsed test explanations): \"may like\" names the recommender's "
            f"top-1 in {v['like_is_top1']:.1%}; where the target is among the candidates "
            f"({v['target_among_candidates']:.0f}), \"may like\" names it in {v['like_is_target']:.1%}, the "
            f"top-1 is it in {v['top1_is_target']:.1%}. Per candidate rank (a verdict that knows nothing "
            "beyond the rank has equal rates in the last two rows):", "", *verdict_table(v), ""]


def _write_results(cfg, data, run_dir: Path, per_seed: dict, eval_ids: dict, report: list[str]) -> None:
    n_test = len(eval_ids["test"])
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    head = [f"# {cfg.name}: RecPIE vs its own backbone", "",
            f"Protocol: {cfg.data.source} {cfg.data.city}, chronological 80/10/10 cut, full ranking over all "
            f"POIs; {n_test} test samples (subset seed {cfg.recpie.subset_seed}, 0 = all), seeds "
            f"{run_seeds(cfg)}; explainer {cfg.explainer.model} ({cfg.explainer.quantization}), "
            f"{cfg.recpie.cycles} cycles x {cfg.recpie.rec_steps_per_cycle} recommender steps, "
            f"{cfg.recpie.ppo_iterations} PPO iteration(s) per cycle; test scores the "
            f"{cfg.recpie.test_checkpoint} checkpoint. Peak RSS {peak_gb:.1f} GiB.", "",
            f"Supervision (backbone, fusion, explainer warm-up, rollouts, refreshes): {fraction_line(data)}; "
            "histories, prompts, val and test keep every check-in.", "",
            "Mean +- std over seeds:", "", mean_std_table(per_seed), ""]
    text = "\n".join(head + report)
    (run_dir / "results.md").write_text(text)
    summary = {name: [{k: float(v) for k, v in m.items()} for m in runs] for name, runs in per_seed.items()}
    (run_dir / "results.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True),
                                                      "per_seed": summary}, indent=2))
    print("\n" + "\n".join(head[:3]))
    print(mean_std_table(per_seed, names=HEADLINE))
    print("\n" + "\n".join(report))
    print(f"full tables: {run_dir / 'results.md'}")
