"""RecPIE: the recommender and the LLM explainer trained together, in turns, in one LightningModule.

One training epoch is one *cycle* (so every checkpoint falls on a cycle boundary):

1. ``on_train_epoch_start``: the explainer's turn. In the first cycle a short supervised format warm-up
   (with ``recpie.sft_eval_every``, measured along the way on val: the warm-up curve);
   then ``recpie.ppo_iterations`` PPO iterations, each on fresh sampled explanations of train samples,
   rewarded by the recommender's log-likelihood gain on the true next POI with the sample's own explanation
   over another sample's (rl.reward) and penalised for a missing EOS or unparseable text. PPO runs against
   the fusion fitted to the current explanations: a fitted head is fitted before the first PPO iteration
   (a gradient-trained head starts as the identity, where the gain is 0 and only the penalties and the KL
   speak); then greedy explanations for ``recpie.refresh_budget`` of the train samples this cycle will use.
   Then the fusion's turn (``fit_fusion``, in the control too): a fitted head (the verdict re-ranker) gets
   its weights in closed form on every train sample explained so far, before the recommender's steps
   (LangPTune's order: the recommender side is fitted to the current explanations first).
2. ``training_step``: the recommender's turn, ``recpie.rec_steps_per_cycle`` supervised steps (with the
   warm-up's loss weights) on the rows of the ``CycleSampler``, each sample's explanation fused into its
   user state (or the null explanation: none cached yet, null dropout, or the control run with
   ``recpie.use_explanations=false``).
3. validation / test: greedy explanations by the current policy for the current candidates (cached),
   fused, ranked over all POIs by the one evaluator; also scored with the null explanation and with
   another sample's, so that a gain can be attributed to the explanations' content.

Every random choice is seeded from (seed, cycle, rank, phase), so a run resumed from a cycle-boundary
checkpoint continues exactly as the uninterrupted one. Checkpoints hold the recommender, the fusion,
LoRA, soft prompt and value head, both optimizers, the reward normaliser, the KL coefficient and the
train explanations; never the frozen base LLM.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from recpie.components.explained_recommender import ExplainedRecommender
from recpie.data.fraction import supervision_draw
from recpie.data.types import CheckinData
from recpie.errors import CheckpointError
from recpie.evaluation import METRIC_NAMES, RankMetric, metrics_from_ranks, ranks_from_scores
from recpie.evaluation.verdicts import verdict_counts, verdict_pairs, verdict_summary
from recpie.explainer.explainer import Explainer
from recpie.explainer.writer import ExplanationWriter, progress
from recpie.models.cycle_sampler import warmup_and_fusion_ids
from recpie.models.recommender_module import sample_ends_trajectory, target_loss_weight
from recpie.rl.explainer_trainer import ExplainerTrainer, optimizer_step
from recpie.rl.value_head import value_head_for
from recpie.utils.checkpoints import DRAW_KEY
from recpie.utils.run_folder import config_fingerprint
from recpie.utils.seeds import phase_seed

CONTROL_EXPLANATION_DIM = 16  # the control never sees an explanation: its null vector's size is immaterial
RECOMMENDER_PARTS = ("backbone.", "fusion.")  # checkpoint names of the recommender's weights, at the top level
# what each PPO iteration logs as its own point (ppo_iteration/<name>; the cycle's scalars average the iterations)
ITERATION_SCALARS = {"reward/raw_mean": "reward_mean", "reward/raw_std": "reward_std",
                     "reward/positive_share": "reward_positive_share", "reward/content": "reward_content",
                     "reward/eos_rate": "eos_rate", "reward/parse_rate": "parse_rate",
                     "reward/like_hit_rate": "like_hit_rate", "ppo/kl_k1_per_seq": "kl_per_seq"}
# logged per iteration where the estimator gives it (rl.estimator=expected)
OPTIONAL_ITERATION_SCALARS = {"reward/gain_over_reference": "reward_over_reference"}


class RecPIEModule(L.LightningModule):
    """The schedule (the explainer's turn, then the recommender's), evaluation and checkpoints; the work is
    done by its collaborators: ``recommender`` (backbone + fusion), ``writer`` (explanations and their
    store) and ``explainer_trainer`` (warm-up and PPO), built in ``configure_model``."""

    def __init__(self, cfg: DictConfig, data: CheckinData, backbone: torch.nn.Module,
                 eval_ids: dict[str, torch.Tensor], seed: int, curve_file: Path | None = None):
        """eval_ids: the fixed val/test sample ids scored (a subset or all; chosen by the recipe); seed: the
        run's seed (one of run.seeds), from which every random choice of the joint training derives;
        curve_file: where the warm-up curve (recpie.sft_eval_every) is written, a .json and a .csv beside it."""
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints leave out the frozen base LLM
        self.cfg, self.rc, self.data = cfg, cfg.recpie, data
        self.eval_ids, self.seed, self.curve_file = eval_ids, seed, curve_file
        # train samples the warm-up reads / those refreshed, rolled out and fused (disjoint with hindsight)
        self.sft_ids, self.explainable = warmup_and_fusion_ids(data, cfg.recpie.sft_target, cfg.recpie.sft_share, seed)
        self.verdicts = cfg.explainer.encoder == "verdict"  # evaluation also counts what the verdicts know
        self.register_buffer("train_ends", sample_ends_trajectory(data, "train"), persistent=False)
        # the backbone waits outside the module tree until the recommender takes it in configure_model
        # (a registered copy would give its weights a second name)
        self._backbone_to_fuse = [backbone]
        self.explainer: Explainer | None = None
        self.value_head: torch.nn.Module | None = None
        self.recommender: ExplainedRecommender | None = None
        self.writer: ExplanationWriter | None = None
        self.explainer_trainer: ExplainerTrainer | None = None
        self.register_state_dict_post_hook(_checkpoint_names)
        self.register_load_state_dict_pre_hook(_module_names)
        self._ranks: dict[str, RankMetric] = {}  # per split/feed, made on the module's device at first use
        self._verdict_counts: dict[str, torch.Tensor] = {}
        self.fusion_fits: list[dict] = []  # per cycle, what fit_fusion fitted (checkpointed)

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        """Load the LLM once (Lightning may call this again on resume) and size what depends on it."""
        if self.recommender is not None:
            return
        torch.manual_seed(phase_seed(self.seed, "init"))  # LoRA, soft prompt and fusion init
        backbone = self._backbone_to_fuse.pop()
        dim = 2 * self.cfg.explainer.num_candidates if self.verdicts else CONTROL_EXPLANATION_DIM
        if self.rc.use_explanations:
            self.explainer = Explainer(self.cfg.explainer, backbone.hidden_size, self.data)
            dim = self.explainer.encoding_dim
            if self.cfg.rl.estimator == "gae":
                self.value_head = value_head_for(self.explainer.model).to(self.explainer.device)
        ec = self.cfg.explainer
        self.recommender = ExplainedRecommender.build(backbone, ec.granularity, self.verdicts, dim, ec.num_candidates,
                                                      self.rc.gate_bias, self.rc.fusion_folds)
        cache_tag = f"{self.cfg.name}-seed{self.seed}-{self.config_fingerprint()}"
        self.writer = ExplanationWriter(self.cfg, self.data, self.recommender, self.explainer, cache_tag, self)
        self.explainer_trainer = ExplainerTrainer(self.cfg, self.data, self.explainer, self.value_head, self.writer,
                                                  self, self.sft_ids, self.explainable, self.seed, self.curve_file)

    def configure_optimizers(self):
        groups = [{"params": list(self.backbone.parameters()), "lr": self.rc.rec_lr},
                  {"params": list(self.fusion.parameters()), "lr": self.rc.fusion_lr}]
        # a fitted fusion (fit_fusion) has no parameters for an optimizer
        rec = torch.optim.AdamW([group for group in groups if group["params"]])
        if self.explainer is None:
            return rec
        llm_params = self.explainer.trainable_parameters()
        if self.value_head is not None:
            llm_params += list(self.value_head.parameters())
        return [rec, torch.optim.AdamW(llm_params, lr=self.rc.llm_lr)]

    def _optimizers(self):
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    backbone = property(lambda self: self.recommender.backbone)
    fusion = property(lambda self: self.recommender.fusion)
    store = property(lambda self: self.writer.store)
    policy_version = property(lambda self: self.explainer_trainer.policy_version)

    def predict(self, batch, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, top-k candidates) of a sample batch as the recommender predicts before any explanation."""
        return self.recommender.predict(batch, k)

    def predict_top(self, batch, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, top-k candidates, their logits): what a prompt of explainer.show_scores also states."""
        return self.recommender.predict_top(batch, k)

    # ------------------------------------------------------------------ what the collaborators call (host)
    @property
    def world_size(self) -> int:
        return self.trainer.world_size

    def gathered(self, x: torch.Tensor) -> torch.Tensor:
        """x [n] from every rank, flattened rank-major (x itself without DDP)."""
        return self.all_gather(x).reshape(-1) if self.world_size > 1 else x

    def reduced(self, x: torch.Tensor, op: str) -> torch.Tensor:
        return self.trainer.strategy.reduce(x, reduce_op=op)

    def log_ppo_iteration(self, stats: dict[str, float]) -> None:
        """One PPO iteration's reward summary (ITERATION_SCALARS, and OPTIONAL_ITERATION_SCALARS where the
        estimator gives them) as TensorBoard scalars ppo_iteration/*, at
        x = the policy version (1: after the warm-up, +1 per PPO iteration): the trend within a cycle."""
        if self.logger is not None:
            optional = {key: name for key, name in OPTIONAL_ITERATION_SCALARS.items() if key in stats}
            self.logger.log_metrics({f"ppo_iteration/{name}": stats[key]
                                     for key, name in {**ITERATION_SCALARS, **optional}.items()},
                                    step=self.policy_version)

    def log_curve(self, values: dict[str, float], examples: int) -> None:
        """A point of the warm-up curve as TensorBoard scalars sft_eval/*, at x = the warm-up examples seen."""
        if self.logger is not None:
            self.logger.log_metrics({f"sft_eval/{name}": value for name, value in values.items()}, step=examples)

    def log_text(self, tag: str, text: str) -> None:
        """Explanation text on TensorBoard's text tab (other loggers skip it)."""
        if self.logger is not None and hasattr(self.logger.experiment, "add_text"):
            self.logger.experiment.add_text(tag, text, self.global_step)

    # ------------------------------------------------------------------ the cycle
    def on_train_epoch_start(self) -> None:
        """The explainer's turn (``explainer_turn``; not in the control), then the fusion's (``fit_fusion``)."""
        # dropout and sampling draw from the global generator: reseed it per cycle so resuming is exact
        torch.manual_seed(phase_seed(self.seed, self.current_epoch, self.global_rank, "cycle"))
        if self.explainer is not None:  # the control: no explainer's turn
            self.explainer_turn()
        self.fit_fusion()

    def explainer_turn(self) -> None:
        """Warm-up (first cycle), PPO iterations against the fusion fitted to the current explanations, then
        fresh train explanations. A fitted head that was never fitted (the first cycle) is fitted first, on
        the warmed-up policy's explanations of this cycle's samples, so PPO never runs against the identity,
        whose reward is 0 for every text (issue 24); those samples are explained again after PPO."""
        opt, explainer_trainer = self._optimizers()[1], self.explainer_trainer
        explainer_trainer.prepare(opt)
        if self.rc.ppo_iterations > 0 and self.recommender.fitted and not self.fusion_fits:
            self.refresh_train()
            self.fit_fusion()
        for k in progress(range(self.rc.ppo_iterations), f"cycle {self.current_epoch}: PPO iterations",
                          self.global_rank):
            stats = explainer_trainer.ppo_iteration(opt, k)
            self.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True)
            self.log_ppo_iteration(stats)
        self.refresh_train()
        if self.device.type == "cuda":
            self.log("speed/peak_gpu_gib", torch.cuda.max_memory_allocated(self.device) / 2**30, on_epoch=True)

    def refresh_train(self) -> None:
        """Greedy explanations by the current policy of this cycle's train samples (the sampler's refresh)."""
        refreshed = self.trainer.train_dataloader.sampler.refreshed(self.current_epoch, self.global_rank)
        self.writer.refresh(refreshed, self.explainer_trainer.policy_version)
        self.log("explanations/train_coverage", self.store.coverage("train"), on_epoch=True)

    def fit_fusion(self) -> None:
        """A fitted fusion head (the verdict re-ranker) gets its weights in closed form, cross-fitted
        (ExplainedRecommender.fit_verdicts), on the samples of ``recpie.fusion_fit_split``, each with the
        candidates its explanation is about: every train sample refreshed so far on any rank (the sampler's
        pool; the same on every rank, whose stores hold every rank's explanations), or the val samples the
        run scores (explained here by the current policy, if their store entries are stale). The control
        fits the same samples with the null explanation. Other heads learn in the recommender's steps.
        Logs and keeps (``fusion_fits``) the fitted values."""
        rec, split = self.recommender, self.rc.fusion_fit_split
        if not rec.fitted:
            return
        ids = self.trainer.train_dataloader.sampler.pool(self.current_epoch) if split == "train" \
            else self.eval_ids["val"]

        def batches():
            for start in range(0, len(ids), self.rc.batch_size):
                chunk = ids[start:start + self.rc.batch_size]
                batch = self.writer.batch(split, chunk)
                if split == "val":
                    candidates = self.writer.explain(split, chunk, batch, self.policy_version)[1]
                else:
                    candidates = self.store.shown(split, chunk, rec.predict(batch)[1])
                z, present = self.store.get(split, chunk, self.device)
                yield batch, z, present, candidates, chunk

        stats = rec.fit_verdicts(batches(), self.rc.fusion_ridge)
        self.fusion_fits.append({"cycle": int(self.current_epoch), **stats})
        self.log_dict(stats, on_step=False, on_epoch=True)

    def fitted_ids(self, split: str, ids: torch.Tensor) -> torch.Tensor | None:
        """The sample ids of a batch of ``split`` when a fitted fusion may have been fitted on them (its split,
        recpie.fusion_fit_split): each is then scored by the weights fitted without its fold; else None."""
        return ids if split == self.rc.fusion_fit_split else None

    def training_step(self, batch, batch_idx):
        """The recommender's turn: one supervised step, each sample's explanation fused (or the null one)."""
        opt, rec = self._optimizers()[0], self.recommender
        ids = batch["sample_id"]
        torch.manual_seed(phase_seed(self.seed, self.current_epoch, batch_idx, self.global_rank, "rec"))
        h = rec.user_state(batch)
        z, present = self.store.get("train", ids, self.device)
        g = torch.Generator(device="cpu").manual_seed(
            phase_seed(self.seed, self.current_epoch, batch_idx, self.global_rank, "null"))
        keep = torch.rand(present.shape, generator=g) >= self.rc.null_dropout
        present = present & keep.to(present.device)
        # re-ranking heads re-score what each stored explanation is about, not the moved top-K
        candidates = self.store.shown("train", ids, rec.candidates(batch, h.detach())) if rec.reranks else None
        fused = rec.fuse(batch, h, z, present, candidates, crossfit_ids=self.fitted_ids("train", ids))
        tc = self.cfg.train
        weight = target_loss_weight(self.train_ends[ids], self.backbone.target_visited(batch)[:, -1], tc)
        per = F.cross_entropy(fused.logits, rec.target(batch), label_smoothing=tc.label_smoothing, reduction="none")
        loss = (per * weight).sum() / weight.sum()
        optimizer_step(self, opt, [loss], self.rc.grad_clip)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/explained_share", present.float().mean(), on_step=False, on_epoch=True)
        for name, value in fused.diagnostics.items():
            self.log(name, value, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ evaluation
    def _score_step(self, split: str, batch) -> None:
        """Ranks with each sample's own explanations, with the null one, and with those of the previous
        sample of the batch ("other"): a gain that survives the swap is not the explanation's content."""
        ids, rec = batch["sample_id"], self.recommender
        h, candidates = self.writer.explain(split, ids, batch, self.policy_version)
        z, present = self.store.get(split, ids, self.device)
        target = rec.target(batch)
        fitted = self.fitted_ids(split, ids)
        with torch.no_grad():
            fused = rec.logits(batch, h, z, present, candidates, fitted)
            null = rec.logits(batch, h, *rec.null_explanations(h), candidates, fitted)
            other = rec.logits(batch, h, z.roll(1, 0), present.roll(1, 0), candidates, fitted)
        for name, logits in (("recpie", fused), ("null", null), ("other", other)):
            if f"{split}/{name}" not in self._ranks:
                self._ranks[f"{split}/{name}"] = RankMetric().to(self.device)
            self._ranks[f"{split}/{name}"].update(ids, ranks_from_scores(logits, target),
                                                  logits.topk(self.cfg.eval.topk, -1).indices)
        if self.verdicts:
            self._count_verdicts(split, z[present], candidates[present[:, 0]], target[present[:, 0]])

    def _count_verdicts(self, split: str, z: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor) -> None:
        """Whether the explanations know more than the recommender (evaluation/verdicts.py; the evaluation
        reads the target, the explanations never do)."""
        counts = verdict_counts(verdict_pairs(z, candidates.shape[1])[..., 0], candidates, target)
        self._verdict_counts[split] = counts + self._verdict_counts.get(split, 0)

    def validation_step(self, batch, batch_idx):
        self._score_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._score_step("test", batch)

    def _finish(self, split: str) -> None:
        for name in ("recpie", "null", "other"):
            metric = self._ranks.pop(f"{split}/{name}", None)
            if metric is None:
                continue
            ids, ranks, topk = metric.compute()
            metrics = metrics_from_ranks(ranks)
            prefix = f"{split}/" if name == "recpie" else f"{split}_{name}/"
            self.log_dict({prefix + m: float(metrics[m]) for m in METRIC_NAMES}, rank_zero_only=True)
            self.results[f"{split}/{name}"] = (ids, ranks, topk)
        if self.verdicts:
            empty = torch.zeros(1 + 3 * self.cfg.explainer.num_candidates)
            counts = self._verdict_counts.pop(split, empty).to(self.device)
            verdicts = verdict_summary(self.reduced(counts, "sum").cpu())
            self.log_dict({f"{split}_verdict/{k}": float(v) for k, v in verdicts.items() if not isinstance(v, list)},
                          rank_zero_only=True)
            self.results[f"{split}/verdicts"] = verdicts
        if split == "val":
            shown = self.eval_ids["val"][:3].tolist()
            self.log_text("explanations/val", "\n\n".join(
                f"**sample {i}**: " + " | ".join(self.store.texts["val"].get(i, ["(none)"])) for i in shown))

    def on_validation_epoch_start(self) -> None:
        self.results = getattr(self, "results", {})

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {f"backbone.{k}" for k in self.backbone.state_dict()} | {f"fusion.{k}" for k in self.fusion.state_dict()}
        if self.explainer is not None:
            keep |= {f"explainer.{k}" for k in self.explainer.trainable_state_dict()}
            keep |= {f"explainer.soft_prompt.{k}" for k in self.explainer.soft_prompt.state_dict()}
        if self.value_head is not None:
            keep |= {f"value_head.{k}" for k in self.value_head.state_dict()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["recpie"] = {"store": self.store.state_dict(), "config_fingerprint": self.config_fingerprint(),
                                "fusion_fits": self.fusion_fits, **self.explainer_trainer.state_dict()}
        checkpoint[DRAW_KEY] = supervision_draw(self.data)  # whoever loads the backbone alone checks it

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("recpie")
        if extra is None:
            raise CheckpointError("this checkpoint was not written by RecPIEModule (no 'recpie' entry)")
        if extra["config_fingerprint"] != self.config_fingerprint():
            raise CheckpointError(
                "checkpoint is from another config (model, data or schedule differ); start a new run "
                "directory or resume with the config it was written with")
        self.store.load_state_dict(extra["store"])
        self.fusion_fits = list(extra.get("fusion_fits", []))
        self.explainer_trainer.load_state_dict(extra)

    def config_fingerprint(self) -> str:
        """What must match for a checkpoint to be resumable: data, model shapes and the schedule, less the
        keys that may change on resume (recpie.utils.run_folder.MAY_CHANGE)."""
        return config_fingerprint(self.cfg, ("data", "backbone", "explainer", "rl", "recpie"))


def _checkpoint_names(module, state_dict, prefix, local_metadata) -> None:
    """state_dict() names the recommender's weights backbone.* and fusion.*, as checkpoints always have."""
    inner = f"{prefix}recommender."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _module_names(module, state_dict, prefix, *args) -> None:
    """load_state_dict() reads backbone.* and fusion.* into the recommender (the inverse of _checkpoint_names)."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in RECOMMENDER_PARTS))]:
        state_dict[f"{prefix}recommender.{key[len(prefix):]}"] = state_dict.pop(key)
