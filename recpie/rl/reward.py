"""The reward: the recommender's gain (the target's log-likelihood or reciprocal rank) from an explanation over
another sample's (or the null) explanation; from raw scores to PPO scores (running normalisation with a floor
on its std, clipping, format penalties); the KL coefficient."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recpie.components.explained_recommender import Batch, ExplainedRecommender
from recpie.config_checks import check_section
from recpie.rl.config import KLConfig, RewardBaseline, RewardConfig, RewardMetric


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """[n] a random permutation without fixed points (n >= 2): each index is sent to the next one along a
    seeded random order, so no sample is ever compared with itself."""
    if n < 2:
        raise ValueError(f"another sample's explanation needs >= 2 samples per rollout, got {n} "
                         "(raise recpie.rollout_prompts or set rl.reward.baseline=null)")
    order = torch.randperm(n, generator=generator)
    other = torch.empty(n, dtype=torch.long)
    other[order] = order.roll(-1)
    return other


def other_rows(rows: Tensor, generator: torch.Generator) -> Tensor:
    """[N] for rollout rows of samples ``rows`` (sample-major, the same number of rows per sample: its slots
    x its group), the row holding the same slot and group member of another sample (a derangement)."""
    n = int(rows.max()) + 1
    block = len(rows) // n
    other = derangement(n, generator).to(rows.device)
    return other[rows] * block + torch.arange(len(rows), device=rows.device) % block


@dataclass
class ExplanationReward:
    """Per rollout row, the target's value (rl.reward.metric: log p or 1 / rank) under the recommender (eval
    mode) with the row's own explanation, with another sample's in the same slot, and with the null one; the
    raw reward is own minus the configured baseline's (rl.reward.baseline)."""

    own: Tensor  # [N]
    other: Tensor  # [N]
    null: Tensor  # [N]

    def raw(self, baseline: RewardBaseline | str) -> Tensor:
        return self.own - (self.other if baseline == "other" else self.null)

    def stats(self) -> dict[str, float]:
        """Means over the rows; ``reward/content`` (own minus another sample's) is what the text says about
        this sample, whatever the baseline."""
        return {"reward/with_explanation_logp": self.own.mean().item(), "reward/null_logp": self.null.mean().item(),
                "reward/other_logp": self.other.mean().item(), "reward/content": (self.own - self.other).mean().item()}


def explanation_reward(recommender: ExplainedRecommender, batch: Batch, h: Tensor, candidates: Tensor,
                       rows: Tensor, slot: Tensor, z: Tensor, present: Tensor, other: Tensor,
                       metric: RewardMetric | str = "log_likelihood") -> ExplanationReward:
    """Row r puts explanation z[r] into slot ``slot[r]`` of sample ``rows[r]`` (the null where ``present[r]``
    is False: a text the recommender cannot read), and ``z[other[r]]`` for the comparison. The other slots
    stay null, so a row without a readable explanation scores exactly the null's value. ``metric``
    (rl.reward.metric): the target's log p or its reciprocal rank over all POIs."""
    _, null, own = recommender.target_gain(batch, h, candidates, rows, slot, z, str(metric))
    _, _, swapped = recommender.target_gain(batch, h, candidates, rows, slot, z[other], str(metric))
    return ExplanationReward(torch.where(present, own, null), torch.where(present[other], swapped, null), null)


class RunningMoments:
    """Running mean and std of every score seen (parallel Welford); saved in checkpoints via state_dict."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, x: Tensor) -> None:
        """Fold a batch of raw scores into the running mean / (population) variance."""
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = x.mean().item(), x.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count == 0:
            self.var = batch_var
        else:
            self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalise(self, x: Tensor, std_floor: float = 0.0, eps: float = 1e-8) -> Tensor:
        """(x - mean) / max(std, std_floor): with a floor, scores whose spread so far is below it are not
        blown up to unit size."""
        return (x - self.mean) / (max(self.std, std_floor) + eps)

    def state_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def parse_flags(texts: Sequence[str], parse_ok: Callable[[str], bool]) -> Tensor:
    """Bool [N]: whether the caller's parse check accepts each response text."""
    return torch.tensor([bool(parse_ok(t)) for t in texts], dtype=torch.bool)


def shape_scores(raw: Tensor, has_eos: Tensor, parsed: Tensor, moments: RunningMoments,
                 cfg: RewardConfig) -> tuple[Tensor, dict[str, float]]:
    """Update the running moments with `raw`, normalise, clip, then add the EOS and parse penalties.

    Returns the PPO scores [N] and stats (raw mean, spread and share above 0, shaped mean and spread, EOS
    rate, parse rate).
    """
    raw = raw.float()
    scores = raw
    if cfg.normalise:
        moments.update(raw)
        scores = moments.normalise(raw, cfg.std_floor)
    if cfg.clip > 0:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    has_eos, parsed = has_eos.to(raw.device), parsed.to(raw.device)
    scores = scores + cfg.missing_eos_penalty * (~has_eos).float()
    scores = scores + cfg.unparseable_penalty * (~parsed).float()
    stats = {
        "reward/raw_mean": raw.mean().item(),
        "reward/raw_std": raw.std(unbiased=False).item(),
        "reward/positive_share": (raw > 0).float().mean().item(),
        "reward/score_mean": scores.mean().item(),
        "reward/score_std": scores.std(unbiased=False).item(),
        "reward/eos_rate": has_eos.float().mean().item(),
        "reward/parse_rate": parsed.float().mean().item(),
    }
    return scores, stats


class KLController:
    """The KL penalty coefficient: fixed, or adaptive towards a target KL (Ziegler et al. 2019)."""

    def __init__(self, cfg: KLConfig) -> None:
        check_section(cfg, "rl.kl")
        self.cfg = cfg
        self.value = cfg.init_coef

    def update(self, kl_per_sequence: float, n_samples: int) -> None:
        """After a PPO iteration: move the coefficient by at most +-20% per horizon of samples."""
        if not self.cfg.adaptive:
            return
        error = min(max(kl_per_sequence / self.cfg.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.cfg.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
