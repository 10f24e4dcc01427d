"""RecPIE: the recommender and the LLM explainer trained together, in turns, in one LightningModule.

One training epoch is one *cycle* (so every checkpoint falls on a cycle boundary):

1. ``on_train_epoch_start``: the explainer's turn. In the first cycle a short supervised format warm-up;
   then ``recpie.ppo_iterations`` PPO iterations, each on fresh sampled explanations of train samples,
   rewarded by the recommender's log-likelihood gain on the true next POI and penalised for a missing EOS
   or unparseable text (in the first cycle the fusion is still the identity, so the gain is 0 and only
   the penalties and the KL speak: they still shape the format); then greedy explanations for
   ``recpie.refresh_budget`` of the train samples this cycle will use.
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

import hashlib
import logging
import time
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm.auto import tqdm

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.fusion import CandidateReranker, GatedFusion
from recpie.config_checks import check_choice, check_explanation_modes
from recpie.data.types import CheckinData
from recpie.errors import CheckpointError
from recpie.evaluation import METRIC_NAMES, RankAccumulator, metrics_from_ranks, ranks_from_scores
from recpie.evaluation.verdicts import verdict_counts, verdict_summary
from recpie.explainer.explainer import Explainer
from recpie.explainer.parse import parse
from recpie.explainer.prompts import build_prompt
from recpie.explainer.warmup import sft_loss, templated_explanation
from recpie.models.cycle_sampler import phase_seed, warmup_and_fusion_ids
from recpie.explainer.store import ExplanationStore
from recpie.models.recommender_module import sample_ends_trajectory, target_loss_weight
from recpie.rl import KLController, RunningMoments, parse_flags, shape_scores
from recpie.rl.ppo import Rollout, ppo_update
from recpie.rl.value_head import value_head_for
from recpie.utils.run_folder import config_fingerprint

log = logging.getLogger(__name__)
CONTROL_EXPLANATION_DIM = 16  # the control never sees an explanation: its null vector's size is immaterial


class RecPIEModule(L.LightningModule):
    def __init__(self, cfg: DictConfig, data: CheckinData, backbone: torch.nn.Module,
                 eval_ids: dict[str, torch.Tensor]):
        """eval_ids: the fixed val/test sample ids scored (a subset or all; chosen by the recipe)."""
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints leave out the frozen base LLM
        self.cfg, self.rc, self.data = cfg, cfg.recpie, data
        self.granularity = cfg.explainer.granularity
        self.slots = cfg.explainer.num_candidates if self.granularity == "candidate" else 1
        self.backbone = backbone
        self.eval_ids = eval_ids
        self.datasets = {s: SampleDataset(data, s, cfg.data.max_len, cfg.data.history_summary)
                         for s in ("train", "val", "test")}
        # train samples the warm-up reads / those refreshed, rolled out and fused (disjoint with hindsight)
        self.sft_ids, self.explainable = explanation_samples(cfg, data)
        # verdict encoding: the user-level explanation re-ranks the candidates it names (also in the control,
        # with the null verdict, so both variants have the same fusion)
        self.verdicts = cfg.explainer.encoder == "verdict"
        self.register_buffer("train_ends", sample_ends_trajectory(data, "train"), persistent=False)
        self.explainer: Explainer | None = None
        self.fusion: torch.nn.Module | None = None
        self.value_head: torch.nn.Module | None = None
        self.store: ExplanationStore | None = None
        self.moments, self.kl_ctl = RunningMoments(), KLController(cfg.rl.kl)
        self.policy_version = 0
        self.sft_done = False
        check_choice("rl.kl_reference", cfg.rl.kl_reference)
        self.reference_weights: dict[str, torch.Tensor] | None = None  # rl.kl_reference=warmup
        self._acc: dict[str, RankAccumulator] = {}
        self._verdict_counts: dict[str, torch.Tensor] = {}
        self._last_trust: torch.Tensor | None = None  # verdicts: bonus of "may like" minus unnamed candidates

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        """Load the LLM once (Lightning may call this again on resume) and size what depends on it."""
        if self.fusion is not None:
            return
        torch.manual_seed(phase_seed(self.cfg.data.seed, "init"))  # LoRA, soft prompt and fusion init
        dim = 2 * self.cfg.explainer.num_candidates if self.verdicts else CONTROL_EXPLANATION_DIM
        if self.rc.use_explanations:
            self.explainer = Explainer(self.cfg.explainer, self.backbone.hidden_size, self.data)
            dim = self.explainer.encoding_dim
            if self.cfg.rl.estimator == "gae":
                self.value_head = value_head_for(self.explainer.model).to(self.explainer.device)
        d = self.backbone.hidden_size
        if self.verdicts:
            self.fusion = CandidateReranker(d, 2)  # per candidate: (liked, disliked)
        elif self.granularity == "candidate":
            self.fusion = CandidateReranker(d, dim)
        else:
            self.fusion = GatedFusion(d, dim, self.rc.gate_bias)
        self.store = ExplanationStore({s: len(ds) for s, ds in self.datasets.items()}, self.slots, dim)

    def configure_optimizers(self):
        rec = torch.optim.AdamW([{"params": self.backbone.parameters(), "lr": self.rc.rec_lr},
                                 {"params": self.fusion.parameters(), "lr": self.rc.fusion_lr}])
        if self.explainer is None:
            return rec
        llm_params = self.explainer.trainable_parameters()
        if self.value_head is not None:
            llm_params += list(self.value_head.parameters())
        return [rec, torch.optim.AdamW(llm_params, lr=self.rc.llm_lr)]

    def _optimizers(self):
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    # ------------------------------------------------------------------ recommender side
    def _batch(self, split: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = self.datasets[split].__getitems__(ids.tolist())
        return {k: v.to(self.device) for k, v in to_tensors(rows).items()}

    def _targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["target"][:, -1]

    @contextmanager
    def _recommender_eval(self):
        """The recommender as it predicts (no dropout, no grad), for prompts, candidates and rewards."""
        modes = [(m, m.training) for m in (self.backbone, self.fusion)]
        for m, _ in modes:
            m.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for m, training in modes:
                m.train(training)

    def predict(self, batch, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, top-k candidates; k defaults to explainer.num_candidates) of a sample batch, as the
        recommender predicts them before any explanation."""
        with self._recommender_eval():
            h = self.backbone.user_state(batch)
            return h, self._candidates(batch, h, k)

    def _candidates(self, batch, h, k: int | None = None) -> torch.Tensor:
        """The recommender's own top-K (with the null explanation): what the prompt shows."""
        logits = self._logits(batch, h, *self._null_explanations(h))
        return logits.topk(k or self.cfg.explainer.num_candidates, dim=-1).indices

    def _null_explanations(self, h):
        b = h.shape[0]
        return (torch.zeros(b, self.slots, self.store.dim, device=h.device),
                torch.zeros(b, self.slots, dtype=torch.bool, device=h.device), None)

    def _logits(self, batch, h, z, present, candidates=None) -> torch.Tensor:
        """Scores over all POIs with the explanations fused in (z [B,S,dz], present [B,S]); re-ranking
        (candidate granularity, verdicts) needs the ``candidates`` [B,K] the explanations are about."""
        if self.granularity == "user" and not self.verdicts:
            fused, gate = self.fusion(h, z[:, 0], present[:, 0])
            self._last_gate = gate.detach()
            return self.backbone.score(fused, batch)
        logits = self.backbone.score(h, batch)
        if candidates is None:
            return logits
        if self.verdicts:  # one explanation per sample, read as a verdict on each of its K candidates
            z, present = z.view(len(h), candidates.shape[1], 2), present.expand(-1, candidates.shape[1])
        logits, bonus = self.fusion(logits, h, candidates, z, present)
        if self.verdicts:  # how much the recommender trusts "may like" over the unnamed candidates
            liked, unnamed = z[..., 0] > 0, (z.sum(-1) == 0) & present
            if liked.any() and unnamed.any():
                self._last_trust = (bonus[liked].mean() - bonus[unnamed].mean()).detach()
        return logits

    # ------------------------------------------------------------------ explainer side
    def _prompts(self, split: str, ids: torch.Tensor, candidates: torch.Tensor) -> list[str]:
        """One prompt per (sample, slot), sample-major."""
        prompts = []
        for i, cands in zip(ids.tolist(), candidates.tolist(), strict=True):
            prompts += [build_prompt(self.data, split, i, cands, self.cfg.explainer, focus=f)
                        for f in self._focus(cands)]
        return prompts

    def _focus(self, candidates: list[int]) -> list[int | None]:
        """What each slot's explanation is about: every candidate, or (user granularity) the sample."""
        return candidates if self.granularity == "candidate" else [None]

    def _explain(self, split: str, ids: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy explanations of samples ``ids`` by the current policy, through the store and the disk
        cache; returns (h, candidates) of the batch for reuse."""
        h, candidates = self.predict(batch)
        todo = self.store.missing(split, ids, self.policy_version, candidates)
        if len(todo) and self.explainer is not None:
            pick = torch.isin(ids, todo)
            prompts = self._prompts(split, ids[pick], candidates[pick])
            slots = [(i, s) for i in ids[pick].tolist() for s in range(self.slots)]
            keys = [f"{self._cache_tag}/{split}/{i}/{s}/{hashlib.sha1(p.encode()).hexdigest()[:12]}"
                    for (i, s), p in zip(slots, prompts, strict=True)]
            states = h[pick].repeat_interleave(self.slots, 0)
            texts = []
            for start in self._progress(range(0, len(prompts), self.rc.generation_batch),
                                        f"explaining {len(prompts)} {split} prompts (batches)"):
                sl = slice(start, start + self.rc.generation_batch)
                texts += self.explainer.explain(prompts[sl], keys[sl], states[sl], self.policy_version)
            z = self._encode(texts, candidates[pick].repeat_interleave(self.slots, 0)).view(len(todo), self.slots, -1)
            grouped = [texts[k * self.slots:(k + 1) * self.slots] for k in range(len(todo))]
            self.store.put(split, ids[pick], z, grouped, self.policy_version, candidates[pick].tolist())
        return h, candidates

    def _encode(self, texts: list[str], candidates: torch.Tensor) -> torch.Tensor:
        """Embeddings of explanation texts on the module's device (the verdict encoder works on the CPU);
        ``candidates`` [n,K]: what each text's prompt showed."""
        labels = None
        if self.verdicts:
            labels = [[self.data.catalogue.label(p) for p in row] for row in candidates.tolist()]
        return self.explainer.encode(texts, labels).to(self.device)

    @property
    def _cache_tag(self) -> str:
        """Cache keys name the run, seed and config fingerprint (policy versions of different runs are
        different policies); each key also ends in a hash of its prompt, whose candidates move with the
        recommender: a cached text is reused only for the very prompt it was generated from."""
        return f"{self.cfg.name}-seed{self.cfg.data.seed}-{self.config_fingerprint()}"

    def _draw_train_ids(self, n: int, phase: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(phase_seed(self.cfg.data.seed, self.current_epoch, self.global_rank, phase))
        return self.explainable[torch.randperm(len(self.explainable), generator=g)[:n]]

    def _format_warmup(self, opt) -> None:
        """Supervised warm-up on templated explanations, so the base LLM emits the parseable format; with
        hindsight targets "may like" names the true next POI (rows whose target is among the candidates)."""
        g = torch.Generator().manual_seed(phase_seed(self.cfg.data.seed, "sft", self.global_rank))
        hindsight = self.rc.sft_target == "hindsight"
        for _ in self._progress(range(self.rc.sft_steps), "format warm-up (SFT steps)"):
            draw = self.rc.sft_batch * (4 if hindsight else 1)  # hindsight drops rows whose target is not a candidate
            ids = self.sft_ids[torch.randint(len(self.sft_ids), (draw,), generator=g)]
            batch = self._batch("train", ids)
            h, candidates = self.predict(batch)
            like = None
            if hindsight:
                target = self._targets(batch)
                keep = (candidates == target[:, None]).any(1).nonzero().squeeze(1)[:self.rc.sft_batch]
                ids, h, candidates, like = ids[keep.cpu()], h[keep], candidates[keep], target[keep].tolist()
                if not like:  # no target among any drawn row's candidates: draw again
                    continue
            prompts = self._prompts("train", ids, candidates)
            targets = [templated_explanation(self.data, "train", i, c, self.cfg.explainer, focus=f,
                                             like=like[r] if like else None)
                       for r, (i, c) in enumerate(zip(ids.tolist(), candidates.tolist(), strict=True))
                       for f in self._focus(c)]
            loss = sft_loss(self.explainer, prompts, targets, h.repeat_interleave(self.slots, 0))
            self._llm_step(opt, loss)
            self.log("sft/loss", loss.detach(), on_step=False, on_epoch=True)
        self.policy_version += 1

    def _progress(self, iterable, desc: str):
        """A progress bar on rank 0 for the explainer's phases (Lightning's bar covers the rest)."""
        return tqdm(iterable, desc=desc, leave=False, disable=self.global_rank != 0)

    def _llm_step(self, opt, loss: torch.Tensor) -> None:
        opt.zero_grad()
        self.manual_backward(loss)
        if self.rc.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.rc.grad_clip, gradient_clip_algorithm="norm")
        opt.step()

    def _reward(self, batch, h, candidates, rows: torch.Tensor, slot: torch.Tensor, z: torch.Tensor):
        """log p(target | this explanation) - log p(target | null), recommender in eval mode, per row.

        In candidate mode a row's explanation re-scores its own candidate, the others stay null; when
        the target is not among the top-K that still moves the target's probability through the
        softmax normaliser, so the reward is defined (and small) there too."""
        with self._recommender_eval():
            hb, bb = h[rows], {k: v[rows] for k, v in batch.items()}
            cand = candidates[rows]
            zeros, none, _ = self._null_explanations(hb)
            target = self._targets(bb)
            null_lp = F.log_softmax(self._logits(bb, hb, zeros, none, cand), -1).gather(1, target[:, None])
            zz, present = zeros.clone(), none.clone()
            zz[torch.arange(len(rows)), slot] = z
            present[torch.arange(len(rows)), slot] = True
            with_lp = F.log_softmax(self._logits(bb, hb, zz, present, cand), -1).gather(1, target[:, None])
        return (with_lp - null_lp).squeeze(1), null_lp.squeeze(1), with_lp.squeeze(1)

    def _policy_forward(self, mb: Rollout, reference: bool = False):
        """(logprobs, values, entropy) of a minibatch's responses under the current policy, or with
        ``reference`` under the reference policy (rl.kl_reference: the adapter-disabled base with the same
        soft prompt, or the frozen post-warm-up weights; no values): the explainer's one log-prob forward."""
        if reference and self.reference_weights is not None:
            return self._with_weights(self.reference_weights, lambda: self._policy_forward(mb))[0], None, None
        out = self.explainer.response_logprobs(mb.sequences, mb.attention_mask, mb.response_mask,
                                               mb.extras["user_state"], reference=reference)
        if reference:
            return out.logprobs, None, None
        values = self.value_head(out.hidden) * mb.response_mask if self.value_head is not None else None
        return out.logprobs, values, out.entropy

    def _with_weights(self, weights: dict[str, torch.Tensor], fn):
        """fn() with the explainer's LoRA + soft prompt set to ``weights``, then the current ones restored."""
        current = self.explainer.trainable_state_dict()
        self.explainer.load_trainable_state_dict(weights)
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.explainer.load_trainable_state_dict(current)

    def _gathered(self, x: torch.Tensor) -> torch.Tensor:
        """x [n] from every rank, flattened rank-major (x itself without DDP)."""
        return self.all_gather(x).reshape(-1) if self.trainer.world_size > 1 else x

    def _ppo_iteration(self, opt, iteration: int) -> dict[str, float]:
        rl = self.cfg.rl
        start = time.perf_counter()
        group = rl.group_size if rl.estimator in ("grpo", "rloo") else 1
        ids = self._draw_train_ids(self.rc.rollout_prompts, f"ppo{iteration}")
        batch = self._batch("train", ids)
        h, candidates = self.predict(batch)
        prompts = self._prompts("train", ids, candidates)
        # rows: (sample, slot) pairs, each repeated `group` times contiguously (grpo/rloo groups)
        rows = torch.arange(len(ids), device=h.device).repeat_interleave(self.slots * group)
        slot = torch.arange(self.slots, device=h.device).repeat_interleave(group).repeat(len(ids))
        prompts = [p for p in prompts for _ in range(group)]
        torch.manual_seed(phase_seed(self.cfg.data.seed, self.current_epoch, self.global_rank, iteration))
        began = time.perf_counter()
        gen = self.explainer.generate(prompts, h[rows], sample=True)
        rollout_s = time.perf_counter() - began
        with torch.no_grad():
            z = self._encode(gen.texts, candidates[rows])
            raw, null_lp, with_lp = self._reward(batch, h, candidates, rows, slot, z)
            parsed = parse_flags(gen.texts, lambda t: parse(t).ok).to(raw.device)
            # normalise with the scores of every rank, so the running moments stay identical across ranks
            scores, reward_stats = shape_scores(self._gathered(raw), self._gathered(gen.ended),
                                                self._gathered(parsed), self.moments, rl.reward)
            scores = scores.view(-1, len(raw))[self.global_rank if self.trainer.world_size > 1 else 0]
            rollout = Rollout(*gen.rows(), torch.zeros(0), torch.zeros(0), scores, extras={"user_state": h[rows]})
            old_lp, values, _ = self._policy_forward(rollout)
            ref = self._policy_forward(rollout, reference=True)[0]
            rollout.old_logprobs, rollout.ref_logprobs, rollout.values = old_lp, ref, values
        stats = ppo_update(rollout, self._policy_forward, backward=lambda loss: self._llm_backward(opt, loss),
                           step=lambda: self._llm_optimizer_step(opt), cfg=rl, kl_coef=self.kl_ctl.value,
                           generator=torch.Generator().manual_seed(phase_seed(self.current_epoch, iteration)))
        kl = torch.tensor(stats["ppo/kl_k1_per_seq"], device=self.device)
        kl = self.trainer.strategy.reduce(kl, reduce_op="mean")  # one coefficient on every rank
        self.kl_ctl.update(float(kl), n_samples=len(rows) * self.trainer.world_size)
        self.policy_version += 1
        stats.update(reward_stats, **{"reward/with_explanation_logp": with_lp.mean().item(),
                                      "reward/null_logp": null_lp.mean().item(), "ppo/kl_coef": self.kl_ctl.value,
                                      "speed/ppo_iteration_s": time.perf_counter() - start,
                                      "speed/rollout_s": rollout_s,
                                      "speed/rollout_tokens_per_s": gen.response_mask.sum().item() / rollout_s})
        self._log_text("explanations/rollout", "\n\n".join(gen.texts[:4]))
        return stats

    def _log_text(self, tag: str, text: str) -> None:
        """Explanation text on TensorBoard's text tab (other loggers skip it)."""
        if self.logger is not None and hasattr(self.logger.experiment, "add_text"):
            self.logger.experiment.add_text(tag, text, self.global_step)

    def _llm_backward(self, opt, loss: torch.Tensor) -> None:
        self.manual_backward(loss)

    def _llm_optimizer_step(self, opt) -> None:
        if self.rc.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.rc.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad()

    def _refresh(self) -> None:
        """Fresh greedy explanations for this cycle's refresh_budget train samples (the sampler's choice)."""
        ids = self.trainer.train_dataloader.sampler.refreshed(self.current_epoch, self.global_rank)
        began = time.perf_counter()
        for start in range(0, len(ids), self.rc.generation_batch):
            chunk = ids[start:start + self.rc.generation_batch]
            self._explain("train", chunk, self._batch("train", chunk))
        self._share_train_explanations(ids)
        elapsed = time.perf_counter() - began
        log.info("cycle %d: %d train samples explained in %.1f s", self.current_epoch, len(ids), elapsed)
        self.log("speed/refresh_s", elapsed, on_epoch=True)

    def _share_train_explanations(self, ids: torch.Tensor) -> None:
        """Under DDP each rank explained its own samples; every rank (and the checkpoint) gets them all."""
        if self.trainer.world_size == 1:
            return
        gathered = [None] * self.trainer.world_size
        payload = (ids, self.store.z["train"][ids], [self.store.texts["train"][i] for i in ids.tolist()],
                   [self.store.candidates["train"][i] for i in ids.tolist()])
        torch.distributed.all_gather_object(gathered, payload)
        for other_ids, z, texts, candidates in gathered:
            self.store.put("train", other_ids, z, texts, self.policy_version, candidates)

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_epoch_start(self) -> None:
        # dropout and sampling draw from the global generator: reseed it per cycle so resuming is exact
        torch.manual_seed(phase_seed(self.cfg.data.seed, self.current_epoch, self.global_rank, "cycle"))
        if self.explainer is None:
            return
        opt = self._optimizers()[1]
        if not self.sft_done and self.rc.sft_steps > 0:
            self._format_warmup(opt)
            self.sft_done = True
        if self.cfg.rl.kl_reference == "warmup" and self.reference_weights is None:
            self.reference_weights = self.explainer.trainable_state_dict()  # a snapshot on the CPU
        for k in self._progress(range(self.rc.ppo_iterations), f"cycle {self.current_epoch}: PPO iterations"):
            stats = self._ppo_iteration(opt, k)
            log.info("cycle %d PPO %d: reward %.3f (null logp %.3f), KL %.3f, parse %.2f, EOS %.2f; "
                     "%.1f s (rollout %.1f s, %.0f tokens/s)", self.current_epoch, k, stats["reward/raw_mean"],
                     stats["reward/null_logp"], stats["ppo/kl_k1_per_seq"], stats["reward/parse_rate"],
                     stats["reward/eos_rate"], stats["speed/ppo_iteration_s"], stats["speed/rollout_s"],
                     stats["speed/rollout_tokens_per_s"])
            self.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True)
        self._refresh()
        self.log("explanations/train_coverage", self.store.coverage("train"), on_epoch=True)
        if self.device.type == "cuda":
            self.log("speed/peak_gpu_gib", torch.cuda.max_memory_allocated(self.device) / 2**30, on_epoch=True)

    def training_step(self, batch, batch_idx):
        opt = self._optimizers()[0]
        ids = batch["sample_id"]
        torch.manual_seed(phase_seed(self.cfg.data.seed, self.current_epoch, batch_idx, self.global_rank, "rec"))
        h = self.backbone.user_state(batch)
        z, present = self.store.get("train", ids, self.device)
        g = torch.Generator(device="cpu").manual_seed(
            phase_seed(self.cfg.data.seed, self.current_epoch, batch_idx, self.global_rank, "null"))
        keep = torch.rand(present.shape, generator=g) >= self.rc.null_dropout
        present = present & keep.to(present.device)
        candidates = None
        if self.granularity == "candidate" or self.verdicts:
            candidates = self.store.shown("train", ids, self._candidates(batch, h.detach()))
        self._last_trust = None
        logits = self._logits(batch, h, z, present, candidates)
        tc = self.cfg.train
        weight = target_loss_weight(self.train_ends[ids], self.backbone.target_visited(batch)[:, -1], tc)
        per = F.cross_entropy(logits, self._targets(batch), label_smoothing=tc.label_smoothing, reduction="none")
        loss = (per * weight).sum() / weight.sum()
        opt.zero_grad()
        self.manual_backward(loss)
        if self.rc.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.rc.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/explained_share", present.float().mean(), on_step=False, on_epoch=True)
        if isinstance(self.fusion, GatedFusion):
            self.log("fusion/gate_mean", self._last_gate.mean(), on_step=False, on_epoch=True)
        elif self._last_trust is not None:
            self.log("fusion/liked_bonus", self._last_trust, on_step=False, on_epoch=True)

    def _score_step(self, split: str, batch) -> None:
        """Ranks with each sample's own explanations, with the null one, and with those of the previous
        sample of the batch ("other"): a gain that survives the swap is not the explanation's content."""
        ids = batch["sample_id"]
        h, candidates = self._explain(split, ids, batch)
        z, present = self.store.get(split, ids, self.device)
        target = self._targets(batch)
        with torch.no_grad():
            fused = self._logits(batch, h, z, present, candidates)
            null = self._logits(batch, h, *self._null_explanations(h)[:2], candidates)
            other = self._logits(batch, h, z.roll(1, 0), present.roll(1, 0), candidates)
        for name, logits in (("recpie", fused), ("null", null), ("other", other)):
            self._acc.setdefault(f"{split}/{name}", RankAccumulator()).update(
                ids, ranks_from_scores(logits, target), logits.topk(self.cfg.eval.topk, -1).indices)
        if self.verdicts:
            self._count_verdicts(split, z[present], candidates[present[:, 0]], target[present[:, 0]])

    def _count_verdicts(self, split: str, z: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor) -> None:
        """Whether the explanations know more than the recommender (evaluation/verdicts.py; the evaluation
        reads the target, the explanations never do)."""
        counts = verdict_counts(z.view(len(z), candidates.shape[1], 2)[..., 0], candidates, target)
        self._verdict_counts[split] = counts + self._verdict_counts.get(split, 0)

    def validation_step(self, batch, batch_idx):
        self._score_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._score_step("test", batch)

    def _finish(self, split: str) -> None:
        for name in ("recpie", "null", "other"):
            acc = self._acc.pop(f"{split}/{name}", None)
            if acc is None:
                continue
            ids, ranks, topk = acc.result()
            metrics = metrics_from_ranks(ranks)
            prefix = f"{split}/" if name == "recpie" else f"{split}_{name}/"
            self.log_dict({prefix + m: float(metrics[m]) for m in METRIC_NAMES}, rank_zero_only=True)
            self.results[f"{split}/{name}"] = (ids, ranks, topk)
        if self.verdicts:
            empty = torch.zeros(1 + 3 * self.cfg.explainer.num_candidates)
            counts = self._verdict_counts.pop(split, empty).to(self.device)
            verdicts = verdict_summary(self.trainer.strategy.reduce(counts, reduce_op="sum").cpu())
            self.log_dict({f"{split}_verdict/{k}": float(v) for k, v in verdicts.items() if not isinstance(v, list)},
                          rank_zero_only=True)
            self.results[f"{split}/verdicts"] = verdicts
        if split == "val":
            shown = self.eval_ids["val"][:3].tolist()
            self._log_text("explanations/val", "\n\n".join(
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
        checkpoint["recpie"] = {
            "store": self.store.state_dict(), "moments": self.moments.state_dict(),
            "kl": self.kl_ctl.state_dict(), "policy_version": self.policy_version, "sft_done": self.sft_done,
            "config_fingerprint": self.config_fingerprint(), "reference_weights": self.reference_weights,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("recpie")
        if extra is None:
            raise CheckpointError("this checkpoint was not written by RecPIEModule (no 'recpie' entry)")
        if extra["config_fingerprint"] != self.config_fingerprint():
            raise CheckpointError(
                "checkpoint is from another config (model, data or schedule differ); start a new run "
                "directory or resume with the config it was written with")
        self.store.load_state_dict(extra["store"])
        self.moments.load_state_dict(extra["moments"])
        self.kl_ctl.load_state_dict(extra["kl"])
        self.policy_version, self.sft_done = extra["policy_version"], extra["sft_done"]
        self.reference_weights = extra["reference_weights"]

    def config_fingerprint(self) -> str:
        """What must match for a checkpoint to be resumable: data, model shapes and the schedule, less the
        keys that may change on resume (recpie.utils.run_folder.MAY_CHANGE)."""
        return config_fingerprint(self.cfg, ("data", "backbone", "explainer", "rl", "recpie"))


def explanation_samples(cfg: DictConfig, data: CheckinData) -> tuple[torch.Tensor, torch.Tensor]:
    """(warm-up train ids, refreshed/rolled-out/fused train ids) after checking the explanation settings;
    the recipe calls it before any training, so a bad combination fails at once, not after the warm-up."""
    check_explanation_modes(cfg)
    return warmup_and_fusion_ids(data, cfg.recpie.sft_target, cfg.recpie.sft_share, cfg.data.seed)


def subset_ids(n: int, k: int, seed: int) -> torch.Tensor:
    """A fixed, documented subset: the first k of a seeded permutation, sorted (all when k = 0 or k >= n)."""
    if k <= 0 or k >= n:
        return torch.arange(n)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n)[:k]))
