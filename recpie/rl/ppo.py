"""One PPO iteration over a collected rollout: advantages, then epochs of clipped updates on minibatches.

The caller owns the model and the optimizer: it passes `policy_forward` and `optimize` callables, so
Lightning's manual optimization (manual_backward, clip_gradients, DDP, precision) applies.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from recpie.rl.advantages import advantage_estimator, whiten
from recpie.rl.config import RLConfig
from recpie.rl.losses import kl_k1, kl_k3, policy_loss, value_loss
from recpie.rl.masked import masked_mean
from recpie.utils.batching import in_row_order, length_groups


@dataclass
class Rollout:
    """N sampled rows: [left-padded prompt | response of R tokens], plus what PPO needs per token.

    extras holds whatever else policy_forward needs per row (e.g. soft-prompt inputs), first dim N.
    """

    sequences: Tensor  # [N, T] token ids, prompt left-padded, the last R are the response
    attention_mask: Tensor  # [N, T]
    response_mask: Tensor  # [N, R] 1 up to and including the first EOS
    old_logprobs: Tensor  # [N, R] policy log-probs at sampling time (same temperature)
    ref_logprobs: Tensor  # [N, R] adapter-disabled reference log-probs
    scores: Tensor  # [N] shaped sequence scores (see recpie.rl.reward.shape_scores)
    values: Tensor | None = None  # [N, R] value head outputs at sampling time (gae only)
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def responses(self) -> Tensor:
        return self.sequences[:, -self.response_mask.shape[1]:]

    def select(self, index: Tensor) -> Rollout:
        """The rows `index` of every tensor (a minibatch)."""
        picked = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        picked = {k: None if v is None else v[index] for k, v in picked.items()}
        return Rollout(**picked, extras={k: v[index] for k, v in self.extras.items()})


# policy_forward(minibatch) -> (logprobs [n, R], values [n, R] or None, entropy [n, R] or None)
PolicyForward = Callable[[Rollout], tuple[Tensor, "Tensor | None", "Tensor | None"]]


def compute_advantages(rollout: Rollout, cfg: RLConfig, kl_coef: float) -> tuple[Tensor, Tensor | None]:
    """Advantages [N, R] from the configured estimator, whitened if configured, and returns (gae only)."""
    estimate = advantage_estimator(cfg.estimator)
    with torch.no_grad():
        advantages, returns = estimate(rollout.scores.float(), rollout.response_mask, rollout.old_logprobs,
                                       rollout.ref_logprobs, rollout.values, kl_coef, cfg)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, rollout.response_mask, cfg.estimator)
    return advantages, returns


def rollout_stats(rollout: Rollout) -> dict[str, float]:
    """KL to the reference (k1 summed per sequence, k3 per token), response length, score mean."""
    mask = rollout.response_mask
    k1 = (kl_k1(rollout.old_logprobs, rollout.ref_logprobs) * mask).sum(-1)
    return {
        "ppo/kl_k1_per_seq": k1.mean().item(),
        "ppo/kl_k3_per_token": masked_mean(kl_k3(rollout.old_logprobs, rollout.ref_logprobs), mask).item(),
        "ppo/response_len": mask.float().sum(-1).mean().item(),
        "ppo/score_mean": rollout.scores.float().mean().item(),
    }


def _check_detached(rollout: Rollout) -> None:
    tensors = {f.name: getattr(rollout, f.name) for f in fields(rollout) if f.name != "extras"}
    tensors.update({f"extras[{k!r}]": v for k, v in rollout.extras.items()})
    attached = [name for name, t in tensors.items() if t is not None and t.requires_grad]
    if attached:
        raise ValueError(f"Rollout.{', '.join(attached)} require grad: collect rollouts in torch.no_grad()")


def minibatch_loss(mb: Rollout, logprobs: Tensor, values: Tensor | None, advantages: Tensor,
                   returns: Tensor | None, cfg: RLConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped policy loss (+ vf_coef x the clipped value loss, gae) of rows ``mb``, and its stats."""
    mask = mb.response_mask
    loss, stats = policy_loss(logprobs, mb.old_logprobs, advantages, mask, cfg.cliprange)
    stats["policy_loss"] = loss.detach()
    if returns is not None:
        if values is None or mb.values is None:
            raise ValueError("rl.estimator='gae' needs values from policy_forward and in the rollout")
        vf, vf_stats = value_loss(values, mb.values, returns, mask, cfg.cliprange_value)
        loss = loss + cfg.vf_coef * vf
        stats.update(vf_stats, value_loss=vf.detach())
    return loss, stats


def _micro_losses(mb: Rollout, parts: list[Tensor], advantages: Tensor, returns: Tensor | None,
                  policy_forward: PolicyForward, cfg: RLConfig, outputs: list) -> Iterator[Tensor]:
    """The minibatch's loss in parts, one per row group, each weighted by its share of the minibatch's
    response tokens and computed only when the previous one is consumed; appends each part's detached
    (logprobs, values, entropy) to ``outputs``."""
    tokens = mb.response_mask.sum()
    for part in parts:
        micro = mb.select(part)
        logprobs, values, entropy = policy_forward(micro)
        outputs.append(tuple(None if t is None else t.detach() for t in (logprobs, values, entropy)))
        loss, _ = minibatch_loss(micro, logprobs, values, advantages[part],
                                 None if returns is None else returns[part], cfg)
        yield loss * micro.response_mask.sum() / tokens


def ppo_update(rollout: Rollout, policy_forward: PolicyForward, optimize: Callable[[Iterator[Tensor]], None],
               cfg: RLConfig, kl_coef: float, generator: torch.Generator | None = None,
               microbatch_tokens: int | None = None) -> dict[str, float]:
    """cfg.ppo_epochs passes over shuffled minibatches of cfg.minibatch_size rows; one optimize(...) each.

    optimize(losses) must take one optimizer step on the minibatch's loss alone (zero the gradients,
    backward every part as it comes, clip, step). The parts are micro-batches of similar-length rows,
    ``microbatch_tokens`` padded tokens each (None: the whole minibatch at once), each weighted by its share of
    the minibatch's response tokens, so they sum to the minibatch's loss and only one part's activations
    live at a time. Returns the mean of each stat over all minibatches, plus rollout stats; feed
    "ppo/kl_k1_per_seq" to KLController.update.
    """
    if cfg.minibatch_size < 1 or cfg.ppo_epochs < 1:
        raise ValueError(f"rl.minibatch_size={cfg.minibatch_size} and rl.ppo_epochs={cfg.ppo_epochs} "
                         "must both be >= 1")
    _check_detached(rollout)
    advantages, returns = compute_advantages(rollout, cfg, kl_coef)
    n = rollout.sequences.shape[0]
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator).to(rollout.sequences.device)
        for start in range(0, n, cfg.minibatch_size):
            idx = order[start:start + cfg.minibatch_size]
            mb, adv, ret = rollout.select(idx), advantages[idx], None if returns is None else returns[idx]
            parts = ([torch.arange(len(idx), device=idx.device)] if microbatch_tokens is None
                     else length_groups(mb.attention_mask.sum(1), microbatch_tokens))
            outputs: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
            optimize(_micro_losses(mb, parts, adv, ret, policy_forward, cfg, outputs))
            logprobs, values, entropy = (None if column[0] is None else in_row_order(parts, list(column))
                                         for column in zip(*outputs, strict=True))
            with torch.no_grad():
                _, stats = minibatch_loss(mb, logprobs, values, adv, ret, cfg)
            if entropy is not None:
                stats["entropy"] = masked_mean(entropy, mb.response_mask)
            for key, value in stats.items():
                sums[f"ppo/{key}"] = sums.get(f"ppo/{key}", 0.0) + float(value)
            count += 1
    result = {key: total / count for key, total in sums.items()}
    result.update(rollout_stats(rollout))
    result["ppo/advantage_mean_abs"] = masked_mean(advantages.abs(), rollout.response_mask).item()
    return result
