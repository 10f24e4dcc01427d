"""Training the explainer: the format warm-up (measured along the way on val with recpie.sft_eval_every: the
warm-up curve, ``curve_point``), PPO iterations rewarded by the recommender's log-likelihood
gain from each sample's own explanation over another sample's (rl.reward), the policy's log-prob forward and
the KL reference (rl.kl_reference).

Lightning's calls (manual_backward, clip_gradients, all_gather, reduce, logging) reach the trainer through
``TrainerHost``: the joint module passes itself, a test passes a plain double. ``optimizer_step`` is the
one optimizer step of the joint method, the recommender's included.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig

from recpie.components.explained_recommender import ExplainedRecommender
from recpie.data.fraction import supervision_draw
from recpie.data.types import CheckinData
from recpie.errors import CheckpointError, ConfigError
from recpie.evaluation.verdicts import departure_agreement, liked_target_share, teacher_agreement, verdict_pairs
from recpie.explainer.choice import choice_losses, least_likely_other, order_with_first
from recpie.explainer.encoder import VerdictEncoder
from recpie.explainer.explainer import Explainer
from recpie.explainer.parse import parse
from recpie.explainer.warmup import FactsTeacher, sft_losses, templated_choice
from recpie.explainer.writer import ExplanationWriter, WriterHost, progress
from recpie.rl.ppo import Rollout, ppo_update
from recpie.rl.reward import KLController, RunningMoments, explanation_reward, other_rows, parse_flags, shape_scores
from recpie.utils.checkpoints import check_draw, load_checkpoint
from recpie.utils.files import write_or_explain
from recpie.utils.seeds import phase_seed, subset_ids

log = logging.getLogger(__name__)


class TrainerHost(WriterHost, Protocol):
    """The writer's host, plus the training calls that Lightning routes through precision and DDP."""

    def manual_backward(self, loss: torch.Tensor) -> None: ...

    def clip_gradients(self, optimizer, gradient_clip_val: float, gradient_clip_algorithm: str) -> None: ...

    def gathered(self, x: torch.Tensor) -> torch.Tensor: ...

    def reduced(self, x: torch.Tensor, op: str) -> torch.Tensor: ...

    def log_text(self, tag: str, text: str) -> None: ...

    def log_curve(self, values: dict[str, float], examples: int) -> None: ...


# the warm-up curve's names of teacher_agreement's columns, where they differ
CURVE_COLUMNS = {"named": "names_a_candidate", "hit": "like_hit", "departs": "teacher_departs",
                 "off_top1": "like_off_top1"}


def write_curve(path: Path, points: list[dict[str, float]]) -> None:
    """The warm-up curve's points as ``path`` (JSON, a list) and the same stem's .csv (a header row)."""
    write_or_explain(path, json.dumps(points, indent=1), "run.output_dir")
    if points:
        out = io.StringIO()
        rows = csv.DictWriter(out, fieldnames=list(points[0]))
        rows.writeheader()
        rows.writerows(points)
        write_or_explain(path.with_suffix(".csv"), out.getvalue(), "run.output_dir")


def optimizer_step(host: TrainerHost, opt, losses: Iterable[torch.Tensor], grad_clip: float,
                   lr: float | None = None) -> torch.Tensor:
    """The one optimizer step of the joint training (warm-up, PPO minibatches, recommender): on one loss
    alone from zeroed gradients, its gradient norm clipped to grad_clip (0: no clipping) through the host.
    ``losses`` are the loss's parts (micro-batches), each backpropagated before the next is computed, so
    only one part's activations live at a time. ``lr``: the step's learning rate, set on every parameter group
    (the explainer's optimizer serves the warm-up and PPO at rates of their own); None keeps the groups'.
    Returns the loss (their sum, detached)."""
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    opt.zero_grad()
    parts = []
    for loss in losses:
        host.manual_backward(loss)
        parts.append(loss.detach())  # on its device: no sync per part
    if grad_clip > 0:
        host.clip_gradients(opt, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
    opt.step()
    return torch.stack(parts).sum()


@dataclass
class ChoiceRollout:
    """Sampled K-way choices (explainer.choice=scored/readout) in the shape PPO reads a generation: each row's
    "response" is one action, its "may like" position; ``prompts``/``labels`` are per prompt, ``rows`` the
    prompt of each row."""

    texts: list[str]  # the template of each row's choice
    actions: torch.Tensor  # int64 [N]: the sampled "may like" position
    prompt_rows: torch.Tensor  # int64 [N]: the prompt each row was sampled for
    prompts: list[str]
    labels: list[list[str]]

    @property
    def ended(self) -> torch.Tensor:
        return torch.ones(len(self.texts), dtype=torch.bool)  # a choice has no length to run out of

    @property
    def response_mask(self) -> torch.Tensor:
        return torch.ones(len(self.texts), 1, dtype=torch.long, device=self.actions.device)

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        return {"prompt_row": self.prompt_rows}

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sequences [N, 1]: the action, attention mask, response mask): a one-step "response"."""
        return self.actions[:, None], self.response_mask, self.response_mask


def rollout_ids(data: CheckinData, explainable: torch.Tensor, rows: str) -> torch.Tensor:
    """The train samples PPO's prompts are drawn from (recpie.rollout_rows): all ``explainable`` ones, or those
    whose target ends its trajectory."""
    if rows == "all":
        return explainable
    if rows != "trajectory_end":
        raise ConfigError(f"recpie.rollout_rows={rows}: expected all or trajectory_end")
    ends = explainable[torch.from_numpy(data.ends_trajectory(data.splits["train"].target[explainable.numpy()]))]
    if len(ends) < 2:
        raise ConfigError(f"recpie.rollout_rows={rows}: only {len(ends)} train sample(s) end a trajectory (each "
                          "prompt's reward compares it with another's): set recpie.rollout_rows=all")
    return ends


class ExplainerTrainer:
    """The explainer's turn of each cycle, and the state a checkpoint keeps of it (reward normaliser, KL
    coefficient, policy version, whether the warm-up ran, the reference weights)."""

    def __init__(self, cfg: DictConfig, data: CheckinData, explainer: Explainer | None,
                 value_head: torch.nn.Module | None, writer: ExplanationWriter, host: TrainerHost,
                 sft_ids: torch.Tensor, explainable: torch.Tensor, seed: int, curve_file: Path | None = None):
        """sft_ids: the train samples the warm-up reads; explainable: those rolled out; seed: the run's;
        curve_file: where the warm-up curve is written (a .json, and a .csv beside it; None: not written)."""
        self.cfg, self.rc, self.data, self.seed = cfg, cfg.recpie, data, seed
        self.explainer, self.value_head, self.writer, self.host = explainer, value_head, writer, host
        self.recommender: ExplainedRecommender = writer.recommender
        self.sft_ids, self.explainable = sft_ids, explainable
        self.rollout_ids = rollout_ids(data, explainable, self.rc.rollout_rows)
        self.moments, self.kl_ctl = RunningMoments(), KLController(cfg.rl.kl)
        self.policy_version, self.sft_done = 0, False
        self.reference_weights: dict[str, torch.Tensor] | None = None  # rl.kl_reference=warmup
        self.choice_rollout: ChoiceRollout | None = None  # the K-way choices of the PPO iteration running
        # the warm-up curve (recpie.sft_eval_every): its val samples, points (checkpointed) and file
        self.curve_ids = subset_ids(len(data.splits["val"]), self.rc.sft_eval_samples, self.rc.subset_seed)
        self.curve: list[dict[str, float]] = []
        self.curve_file = curve_file

    def state_dict(self) -> dict:
        return {"moments": self.moments.state_dict(), "kl": self.kl_ctl.state_dict(),
                "policy_version": self.policy_version, "sft_done": self.sft_done,
                "reference_weights": self.reference_weights, "warmup_curve": self.curve}

    def load_state_dict(self, state: dict) -> None:
        self.moments.load_state_dict(state["moments"])
        self.kl_ctl.load_state_dict(state["kl"])
        self.policy_version, self.sft_done = state["policy_version"], state["sft_done"]
        self.reference_weights = state["reference_weights"]
        self.curve = list(state.get("warmup_curve", []))  # none in a checkpoint written before the curve

    @property
    def ppo_lr(self) -> float:
        """The learning rate of PPO's steps: rl.lr, or recpie.llm_lr (the warm-up's) when it is 0."""
        return self.cfg.rl.lr or self.rc.llm_lr

    def prepare(self, opt) -> None:
        """Before the cycle's PPO: the format warm-up (once per run; or its weights from
        recpie.warmup_checkpoint), then the KL reference snapshot."""
        if not self.sft_done and self.rc.warmup_checkpoint:
            self.load_warmup(self.rc.warmup_checkpoint)
            self.sft_done = True
        elif not self.sft_done and self.rc.sft_steps > 0:
            self.format_warmup(opt)
            self.sft_done = True
        if self.cfg.rl.kl_reference == "warmup" and self.reference_weights is None:
            self.reference_weights = self.explainer.trainable_state_dict()  # a snapshot on the CPU

    def load_warmup(self, path: str) -> None:
        """The explainer's weights right after another run's warm-up (its checkpoint's KL reference snapshot)
        and that run's warm-up curve, in place of a warm-up: read without running code, refused when the
        checkpoint's data draw is not this run's or its weights do not fit this explainer."""
        what = "recpie.warmup_checkpoint"
        state = load_checkpoint(path, what)
        check_draw(state, path, what, supervision_draw(self.data))
        saved = state.get("recpie", {}) if isinstance(state, dict) else {}
        weights = saved.get("reference_weights")
        if not isinstance(weights, dict) or not weights:
            raise CheckpointError(f"{what}={path} holds no post-warm-up explainer weights (a RecPIE run's "
                                  "checkpoint keeps them as its KL reference only with rl.kl_reference=warmup and "
                                  "an explainer): pass such a run's checkpoints/recpie-seed<s>/last.ckpt, or set "
                                  f"{what}='' to warm up")
        try:
            self.explainer.load_trainable_state_dict(weights)
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{what}={path}: its explainer weights do not fit this run's explainer ({e}); "
                                  "it must come from a run of the same explainer settings (LLM, LoRA, soft "
                                  "prompt, explainer.choice)") from None
        self.curve = list(saved.get("warmup_curve", []))
        if self.curve_file is not None and self.curve:
            write_curve(self.curve_file, self.curve)
        self.policy_version += 1
        log.info("explainer: the warm-up's weights from %s (no warm-up steps run)", path)

    def draw_train_ids(self, n: int, phase: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(
            phase_seed(self.seed, self.host.current_epoch, self.host.global_rank, phase))
        return self.rollout_ids[torch.randperm(len(self.rollout_ids), generator=g)[:n]]

    def format_warmup(self, opt) -> None:
        """Supervised warm-up on templated explanations, so the base LLM emits the parseable format; with
        hindsight targets "may like" names the true next POI (rows whose target is among the candidates),
        with facts targets the choice of the prompt-only facts reader fitted on val (warmup.FactsTeacher).
        With recpie.sft_eval_every, a point of the warm-up curve (``curve_point``, rank 0) every that many
        steps and after the last."""
        g = torch.Generator().manual_seed(phase_seed(self.seed, "sft", self.host.global_rank))
        teacher = FactsTeacher.fit(self.recommender.backbone, self.data, self.cfg) if self.rc.sft_target == "facts" \
            else None
        every, steps = self.rc.sft_eval_every, self.rc.sft_steps
        judge = None  # the teacher the curve sets the explanations against: the warm-up's, or one fitted for it
        if every > 0 and self.host.global_rank == 0:
            judge = teacher if teacher is not None else self.isolated(
                lambda: FactsTeacher.fit(self.recommender.backbone, self.data, self.cfg))
        seen = 0  # the rows trained on so far: steps x sft_batch (hindsight: the rows kept)
        for step in progress(range(1, steps + 1), "format warm-up (SFT steps)", self.host.global_rank):
            seen += self.warmup_step(opt, g, teacher)
            if judge is not None and (step % every == 0 or step == steps):
                self.curve_point(judge, step, seen)
        self.policy_version += 1

    def warmup_step(self, opt, g: torch.Generator, teacher: FactsTeacher | None) -> int:
        """One warm-up step on rows drawn with ``g``; returns how many rows it trained on (hindsight: those
        whose target is among their candidates, none when no drawn row's is: no step then)."""
        hindsight = self.rc.sft_target == "hindsight"
        writer = self.writer
        draw = self.rc.sft_batch * (4 if hindsight else 1)  # hindsight drops rows whose target is not a candidate
        ids = self.sft_ids[torch.randint(len(self.sft_ids), (draw,), generator=g)]
        batch = writer.batch("train", ids)
        h, candidates, logits = self.recommender.predict_top(batch)
        like = dislike = None
        if teacher is not None:
            like, dislike = teacher.choice(self.data, "train", ids.numpy(), candidates.cpu().numpy(),
                                           self.cfg.explainer, logits.cpu().numpy())
        if hindsight:
            target = self.recommender.target(batch)
            keep = (candidates == target[:, None]).any(1).nonzero().squeeze(1)[:self.rc.sft_batch]
            ids, h, candidates, like = ids[keep.cpu()], h[keep], candidates[keep], target[keep].tolist()
            logits = logits[keep]
            if not like:  # no target among any drawn row's candidates: the next step draws again
                return 0
        prompts = writer.prompts("train", ids, candidates, logits)
        if writer.k_way:  # the K-way choice, trained on the whole target order (explainer/choice.py)
            if teacher is not None:
                order = torch.as_tensor(teacher.order(self.data, "train", ids.numpy(), candidates.cpu().numpy(),
                                                      self.cfg.explainer, logits.cpu().numpy()))
            else:  # template: the recommender's order; hindsight: the target first
                order = order_with_first(candidates.cpu(), like or candidates[:, 0].tolist())
            losses = choice_losses(self.explainer, prompts, writer.labels(candidates), order, h)
            loss = optimizer_step(self.host, opt, losses, self.rc.grad_clip, self.rc.llm_lr)
            self.host.log("sft/loss", loss, on_step=False, on_epoch=True)
            return len(ids)
        targets = [templated_choice(self.data, "train", i, c, self.cfg.explainer, focus=f,
                                    like=like[r] if like else None, dislike=dislike[r] if dislike else None,
                                    logits=z)
                   for r, (i, c, z) in enumerate(zip(ids.tolist(), candidates.tolist(), logits.tolist(),
                                                     strict=True))
                   for f in writer.focus(c)]
        losses = sft_losses(self.explainer, prompts, [t.text for t in targets],
                            h.repeat_interleave(writer.slots, 0), [t.names for t in targets],
                            self.rc.sft_choice_weight)
        loss = optimizer_step(self.host, opt, losses, self.rc.grad_clip, self.rc.llm_lr)
        self.host.log("sft/loss", loss, on_step=False, on_epoch=True)
        return len(ids)

    def isolated(self, fn):
        """fn() with the global random state (CPU, and the CUDA devices of the host and the explainer)
        restored afterwards: a measurement must not move any later draw of the run."""
        devices = sorted({d for d in (self.host.device, self.explainer.device) if torch.device(d).type == "cuda"},
                         key=str)
        with torch.random.fork_rng(devices=devices):
            return fn()

    def curve_point(self, teacher: FactsTeacher, step: int, examples: int) -> dict[str, float]:
        """One point of the warm-up curve (recpie.sft_eval_every): greedy explanations by the policy so far of
        the fixed val samples ``curve_ids`` (``writer.drafts``: the run's val prompts, never stored or cached;
        the random state restored after), read as the verdict encoder reads them and set against ``teacher``'s
        top-1 of the same prompts (``evaluation.verdicts.teacher_agreement``). Appended to ``curve``, logged
        (sft_eval/* at x = examples) and written to ``curve_file`` (.json and .csv); returns the point."""
        if self.writer.slots != 1:
            raise ValueError("the warm-up curve reads one user-level explanation per sample "
                             "(explainer.granularity=user)")
        began, ids = time.perf_counter(), self.curve_ids

        def measure():
            batch = self.writer.batch("val", ids)
            texts, candidates, logits = self.writer.drafts("val", ids, batch)
            top = teacher.order(self.data, "val", ids.numpy(), candidates.cpu().numpy(), self.cfg.explainer,
                                logits.cpu().numpy())[:, 0]
            return texts, candidates.cpu(), self.recommender.target(batch).cpu(), torch.as_tensor(top)

        texts, candidates, target, top = self.isolated(measure)
        cols = teacher_agreement(self.liked(texts, candidates), candidates, target, top)
        point = {"step": step, "examples": examples, "samples": len(ids),
                 "parse_rate": sum(parse(t).ok for t in texts) / max(len(texts), 1),
                 **{CURVE_COLUMNS.get(name, name): col.mean().item() for name, col in cols.items()
                    if name != "follows"},  # a joint share: its ratio to "departs" is the meaningful number
                 "departure_agreement": departure_agreement(cols),
                 "generate_calls": -(-len(texts) // self.writer.generation_batch),
                 "seconds": time.perf_counter() - began}
        self.curve.append(point)
        self.host.log_curve({k: v for k, v in point.items() if k not in ("step", "examples", "samples")}, examples)
        if self.curve_file is not None:
            write_curve(self.curve_file, self.curve)
        log.info("warm-up curve, %d examples (step %d): parsed %.2f, \"may like\" names the teacher's top-1 %.3f "
                 "(%.3f where the teacher departs from candidate 1, %.3f of the samples), the target %.3f (teacher "
                 "%.3f, recommender's top-1 %.3f); %d val samples, %.1f s", examples, step, point["parse_rate"],
                 point["agreement"], point["departure_agreement"], point["teacher_departs"], point["like_hit"],
                 point["teacher_hit"], point["top1_hit"], len(ids), point["seconds"])
        return point

    def sample_choices(self, ids: torch.Tensor, prompts: list[str], candidates: torch.Tensor, logits: torch.Tensor,
                       h: torch.Tensor, rows: torch.Tensor) -> ChoiceRollout:
        """explainer.choice=scored/readout: one "may like" position per rollout row (``prompts``: one per
        sample; rows: the sample of each row, rl.group_size contiguous rows per sample) sampled from the
        explainer's K-way pi at explainer.temperature (its log-probs divided by it), "may not like" the
        least likely candidate of another name, the text their template (as the writer writes a greedy one)."""
        labels = self.writer.labels(candidates)
        logp = self.choice_logp(prompts, labels, h)
        picks = torch.multinomial(logp[rows.cpu()].exp(), 1).squeeze(1)
        texts = self.choice_texts(ids, candidates, logits, labels, logp, rows, picks.tolist())
        self.choice_rollout = ChoiceRollout(texts, picks.to(h.device), rows, prompts, labels)
        return self.choice_rollout  # what ``choice_forward`` reads the rows' prompts from

    def choice_logp(self, prompts: list[str], labels: list[list[str]], h: torch.Tensor, reference: bool = False,
                    grad: bool = False) -> torch.Tensor:
        """[n, K] log pi of each prompt's K-way choice at explainer.temperature; with ``reference`` under the
        reference policy (rl.kl_reference: the frozen post-warm-up weights, or the adapter-disabled base; no
        grad), else with grad only if ``grad``."""
        if reference and self.reference_weights is not None:
            return self.with_weights(self.reference_weights, lambda: self.choice_logp(prompts, labels, h))
        with self.explainer.model.disable_adapter() if reference else contextlib.nullcontext():
            logp = self.explainer.choice_logprobs(prompts, labels, h, grad=grad and not reference)
        return self.tempered(logp)

    def tempered(self, logp: torch.Tensor) -> torch.Tensor:
        """log pi at explainer.temperature from the explainer's K-way log-probs [..., K] (at temperature 1)."""
        return torch.log_softmax(logp / self.cfg.explainer.temperature, -1)

    def choice_texts(self, ids: torch.Tensor, candidates: torch.Tensor, logits: torch.Tensor, labels: list[list[str]],
                     logp: torch.Tensor, rows: torch.Tensor, likes: list[int]) -> list[str]:
        """The templated text of each row (a train sample ``rows[r]`` of ``ids``, liking its candidate at
        position ``likes[r]``, disliking the least likely other name under that sample's ``logp``)."""
        r, scores = rows.tolist(), logp.tolist()
        dislikes = [least_likely_other(scores[row], labels[row], like) for row, like in zip(r, likes, strict=True)]
        samples = list(zip(ids.tolist(), candidates.tolist(), logits.tolist(), strict=True))
        return self.writer.choice_texts("train", [samples[row] for row in r], likes, dislikes)

    def policy_forward(self, mb: Rollout, reference: bool = False):
        """(logprobs, values, entropy) of a minibatch's responses under the current policy, or with
        ``reference`` under the reference policy (rl.kl_reference: the adapter-disabled base with the same
        soft prompt, or the frozen post-warm-up weights; no values): the explainer's one log-prob forward.
        A K-way choice's "response" is one action, the "may like" position: its log pi (``choice_forward``)."""
        if reference and self.reference_weights is not None:
            return self.with_weights(self.reference_weights, lambda: self.policy_forward(mb))[0], None, None
        if "prompt_row" in mb.extras:
            return self.choice_forward(mb, reference)
        out = self.explainer.response_logprobs(mb.sequences, mb.attention_mask, mb.response_mask,
                                               mb.extras["user_state"], reference=reference)
        if reference:
            return out.logprobs, None, None
        values = self.value_head(out.hidden) * mb.response_mask if self.value_head is not None else None
        return out.logprobs, values, out.entropy

    def choice_forward(self, mb: Rollout, reference: bool = False):
        """(log pi(action) [n, 1] at explainer.temperature, None, entropy of pi [n, 1]) of a K-way choice's
        rollout rows ``mb`` (the prompts and labels of ``self.choice_rollout``); with ``reference`` under
        the adapter-disabled base (rl.kl_reference=base; no grad). One prompt forward per distinct prompt of
        the minibatch (a prompt's rl.group_size draws share it)."""
        roll = self.choice_rollout
        prompt_rows, inverse = torch.unique(mb.extras["prompt_row"].cpu(), return_inverse=True)
        first = torch.zeros(len(prompt_rows), dtype=torch.long).scatter_(
            0, inverse.flip(0), torch.arange(len(inverse)).flip(0))  # a row of each distinct prompt
        picked = prompt_rows.tolist()
        logp = self.choice_logp([roll.prompts[r] for r in picked], [roll.labels[r] for r in picked],
                                mb.extras["user_state"][first.to(mb.extras["user_state"].device)], reference,
                                grad=not reference)
        logp = logp[inverse.to(logp.device)]
        action = mb.sequences[:, -1:].to(logp.device)
        entropy = -(logp.exp() * logp).sum(-1, keepdim=True).detach()
        return logp.gather(1, action), None, entropy

    def with_weights(self, weights: dict[str, torch.Tensor], fn):
        """fn() with the explainer's LoRA + soft prompt set to ``weights``, then the current ones restored."""
        current = self.explainer.trainable_state_dict()
        self.explainer.load_trainable_state_dict(weights)
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.explainer.load_trainable_state_dict(current)

    def liked(self, texts: list[str], candidates: torch.Tensor) -> torch.Tensor:
        """[n, K] each text's "may like" share per candidate of its prompt (candidates [n, K]; shared labels
        split it; all 0: unparseable or naming none), read as the verdict encoder reads it, whatever the run's
        encoder; on the candidates' device."""
        k = candidates.shape[1]
        return verdict_pairs(VerdictEncoder(k)(texts, self.writer.labels(candidates)), k)[..., 0].to(candidates.device)

    def like_hit_rate(self, texts: list[str], candidates: torch.Tensor, target: torch.Tensor) -> float:
        """Share of the texts whose "may like" names the target (among the candidates [n,K] of each prompt;
        shared labels split the hit)."""
        return liked_target_share(self.liked(texts, candidates), candidates, target).mean().item()

    def ppo_iteration(self, opt, iteration: int) -> dict[str, float]:
        """Sampled explanations of fresh train samples, rewarded by the recommender's log-likelihood gain
        with each sample's own explanation over another sample's (or the null one, rl.reward.baseline),
        penalised for a missing EOS or unparseable text, then ``ppo_update``; returns its stats."""
        if self.cfg.rl.estimator == "expected":
            return self.expected_choice_iteration(opt, iteration)
        rl, host = self.cfg.rl, self.host
        start = time.perf_counter()
        group = rl.group_size if rl.estimator in ("grpo", "rloo") else 1
        ids = self.draw_train_ids(self.rc.rollout_prompts, f"ppo{iteration}")
        batch = self.writer.batch("train", ids)
        h, candidates, logits = self.recommender.predict_top(batch)
        prompts = self.writer.prompts("train", ids, candidates, logits)
        slots = self.writer.slots
        # rows: (sample, slot) pairs, each repeated `group` times contiguously (grpo/rloo groups)
        rows = torch.arange(len(ids), device=h.device).repeat_interleave(slots * group)
        slot = torch.arange(slots, device=h.device).repeat_interleave(group).repeat(len(ids))
        per_sample, prompts = prompts, [p for p in prompts for _ in range(group)]
        torch.manual_seed(phase_seed(self.seed, host.current_epoch, host.global_rank, iteration))
        began = time.perf_counter()
        if self.writer.k_way:  # a K-way choice (explainer.choice): the action is the "may like" position
            gen = self.sample_choices(ids, per_sample, candidates, logits, h, rows)
        else:
            gen = self.explainer.generate(prompts, h[rows], sample=True)
        rollout_s = time.perf_counter() - began
        with torch.no_grad():
            z, present = self.writer.encode(gen.texts, candidates[rows])
            g = torch.Generator().manual_seed(phase_seed(self.seed, host.current_epoch, host.global_rank, iteration,
                                                         "other"))
            parts = explanation_reward(self.recommender, batch, h, candidates, rows, slot, z, present,
                                       other_rows(rows.cpu(), g).to(rows.device), rl.reward.metric)
            raw = parts.raw(rl.reward.baseline)
            parsed = parse_flags(gen.texts, lambda t: parse(t).ok).to(raw.device)
            # normalise with the scores of every rank, so the running moments stay identical across ranks
            scores, reward_stats = shape_scores(host.gathered(raw), host.gathered(gen.ended),
                                                host.gathered(parsed), self.moments, rl.reward)
            scores = scores.view(-1, len(raw))[host.global_rank if host.world_size > 1 else 0]
            rollout = Rollout(*gen.rows(), torch.zeros(0), torch.zeros(0), scores,
                              extras={"user_state": h[rows], **getattr(gen, "extras", {})})
            old_lp, values, _ = self.policy_forward(rollout)
            ref = self.policy_forward(rollout, reference=True)[0]
            rollout.old_logprobs, rollout.ref_logprobs, rollout.values = old_lp, ref, values

        stats = ppo_update(rollout, self.policy_forward, cfg=rl, kl_coef=self.kl_ctl.value,
                           optimize=lambda losses: optimizer_step(host, opt, losses, self.rc.grad_clip, self.ppo_lr),
                           generator=torch.Generator().manual_seed(phase_seed(host.current_epoch, iteration)),
                           microbatch_tokens=self.cfg.explainer.forward_tokens)
        kl = host.reduced(torch.tensor(stats["ppo/kl_k1_per_seq"], device=host.device), "mean")  # one coefficient
        self.kl_ctl.update(float(kl), n_samples=len(rows) * host.world_size)
        self.policy_version += 1
        hits = self.like_hit_rate(gen.texts, candidates[rows], self.recommender.target(batch)[rows])
        stats.update(reward_stats, **parts.stats(), **{
            "reward/like_hit_rate": hits, "ppo/kl_coef": self.kl_ctl.value,
            "speed/ppo_iteration_s": time.perf_counter() - start, "speed/rollout_s": rollout_s,
            "speed/rollout_tokens_per_s": gen.response_mask.sum().item() / rollout_s})
        host.log_text("explanations/rollout", "\n\n".join(gen.texts[:4]))
        log.info("cycle %d PPO %d: reward %.4f +- %.4f (%.0f%% > 0; content %.4f), \"may like\" hits %.2f, KL %.3f, "
                 "parse %.2f, EOS %.2f; %.1f s (rollout %.1f s, %.0f tokens/s)", host.current_epoch, iteration,
                 stats["reward/raw_mean"], stats["reward/raw_std"], 100 * stats["reward/positive_share"],
                 stats["reward/content"], hits, stats["ppo/kl_k1_per_seq"], stats["reward/parse_rate"],
                 stats["reward/eos_rate"], stats["speed/ppo_iteration_s"], stats["speed/rollout_s"],
                 stats["speed/rollout_tokens_per_s"])
        return stats

    def expected_choice_iteration(self, opt, iteration: int) -> dict[str, float]:
        """rl.estimator=expected (a K-way choice): no draws. Every one of a prompt's K choices is written (its
        template, "may not like" the least likely other name under pi) and rewarded (the target's
        rl.reward.metric, log p or 1 / rank, with it minus with the null explanation, the same for all K, under
        the fitted fusion; normalised as any reward), and
        each of rl.ppo_epochs steps ascends the exact expectation sum_j pi_old(j) min(r_j A_j, clip(r_j) A_j),
        r_j = pi(j) / pi_old(j), A_j = the choice's score minus pi_old's expected score (so naming candidate 1
        earns only what it adds over the policy's own average), minus kl_coef x KL(pi || reference), exact over
        the K. With rl.trainable=head only the readout choice's head moves, on each prompt's line states read
        once. Returns the iteration's stats under ppo_iteration's names, each an expectation under pi_old."""
        rl, host = self.cfg.rl, self.host
        start = time.perf_counter()
        ids = self.draw_train_ids(self.rc.rollout_prompts, f"ppo{iteration}")
        batch = self.writer.batch("train", ids)
        h, candidates, logits = self.recommender.predict_top(batch)
        prompts, labels = self.writer.prompts("train", ids, candidates, logits), self.writer.labels(candidates)
        n, k = candidates.shape
        head_only = rl.trainable == "head"  # LoRA and soft prompt frozen: each prompt's line states read once
        if head_only:
            lines = self.explainer.readout_states(prompts, labels, h)

            def read() -> torch.Tensor:  # log pi of the head as loaded now, on the fixed line states
                return self.tempered(self.explainer.readout_logprobs(lines))

            with torch.no_grad():
                old = read()
            ref = self.with_weights(self.reference_weights, read) if self.reference_weights is not None \
                else self.choice_logp(prompts, labels, h, reference=True)  # rl.kl_reference=base: other lines
        else:
            old, ref = self.choice_logp(prompts, labels, h), self.choice_logp(prompts, labels, h, reference=True)
        ref = ref.to(old.device)
        rows = torch.arange(n, device=h.device).repeat_interleave(k)  # (prompt, choice) pairs, prompt-major
        texts = self.choice_texts(ids, candidates, logits, labels, old, rows, list(range(k)) * n)
        with torch.no_grad():
            z, present = self.writer.encode(texts, candidates[rows])
            g = torch.Generator().manual_seed(phase_seed(self.seed, host.current_epoch, host.global_rank, iteration,
                                                         "other"))
            parts = explanation_reward(self.recommender, batch, h, candidates, rows, torch.zeros_like(rows), z,
                                       present, other_rows(rows.cpu(), g).to(rows.device), rl.reward.metric)
            raw = parts.raw("null")
            done = torch.ones(len(raw), dtype=torch.bool, device=raw.device)  # a K-way choice always ends and parses
            shaped, _ = shape_scores(host.gathered(raw), host.gathered(done), host.gathered(done), self.moments,
                                     rl.reward)
            shaped = shaped.view(-1, len(raw))[host.global_rank if host.world_size > 1 else 0].view(n, k)
        pi_old = old.exp()  # everything of the update on the explainer's device
        shaped = shaped.to(old.device)
        advantages = shaped - (pi_old * shaped).sum(-1, keepdim=True)

        def choices():  # (prompt rows, log pi at temperature 1) with grad, one group of prompts at a time
            if head_only:
                yield torch.arange(n), self.explainer.readout_logprobs(lines)
            else:
                yield from self.explainer.choice_groups(prompts, labels, h)

        def loss():  # the mean over prompts, one group of prompts at a time: only its graph lives (issue 24)
            for group, choice in choices():
                group = group.to(old.device)
                new = self.tempered(choice)
                ratio = (new - old[group]).exp()
                a = advantages[group]
                surrogate = torch.minimum(ratio * a, ratio.clamp(1 - rl.cliprange, 1 + rl.cliprange) * a)
                kl = (new.exp() * (new - ref[group])).sum(-1)
                yield (-(pi_old[group] * surrogate).sum(-1) + self.kl_ctl.value * kl).sum() / n

        losses = [optimizer_step(host, opt, loss(), self.rc.grad_clip, self.ppo_lr).item()
                  for _ in range(rl.ppo_epochs)]
        kl_old = (pi_old * (old - ref)).sum(-1).mean()
        kl = host.reduced(kl_old.to(host.device), "mean")  # one coefficient on every rank
        self.kl_ctl.update(float(kl), n_samples=n * host.world_size)
        self.policy_version += 1

        def expected(values: torch.Tensor) -> torch.Tensor:  # [n]: each prompt's mean over pi_old of [n, K] values
            return (pi_old * values.view(n, k).to(pi_old.device)).sum(-1)

        target = self.recommender.target(batch).to(candidates.device)
        mean_raw = expected(raw)
        stats = {**parts.stats(), "reward/raw_mean": mean_raw.mean().item(),
                 "reward/raw_std": mean_raw.std(unbiased=False).item(),
                 "reward/positive_share": expected((raw > 0).float()).mean().item(),
                 "reward/content": expected(parts.own - parts.other).mean().item(),
                 "reward/eos_rate": 1.0, "reward/parse_rate": 1.0,
                 "reward/like_hit_rate": expected((candidates == target[:, None]).float()).mean().item(),
                 "reward/best_choice_share": (advantages.argmax(-1) == pi_old.argmax(-1)).float().mean().item(),
                 # on these prompts, before they move the policy: pi_old's expected raw reward minus the
                 # reference policy's (the warm-up's, under rl.kl_reference=warmup), paired prompt by prompt
                 "reward/gain_over_reference": ((pi_old - ref.exp()) * raw.view(n, k).to(pi_old.device)).sum(-1)
                 .mean().item(),
                 "ppo/kl_k1_per_seq": float(kl), "ppo/kl_coef": self.kl_ctl.value, "ppo/loss": losses[-1],
                 "speed/ppo_iteration_s": time.perf_counter() - start}
        log.info("cycle %d PPO %d (expected over the %d choices): reward %.4f +- %.4f (%.0f%% > 0; content %.4f; "
                 "over the reference %+.4f), \"may like\" hits %.2f, KL %.3f; %.1f s", host.current_epoch, iteration,
                 k, stats["reward/raw_mean"], stats["reward/raw_std"], 100 * stats["reward/positive_share"],
                 stats["reward/content"], stats["reward/gain_over_reference"], stats["reward/like_hit_rate"],
                 stats["ppo/kl_k1_per_seq"], stats["speed/ppo_iteration_s"])
        return stats
