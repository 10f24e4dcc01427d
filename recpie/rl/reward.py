"""From raw scores to PPO scores: running normalisation, clipping, format penalties; the KL coefficient."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from recpie.config_checks import check_section
from recpie.rl.config import KLConfig, RewardConfig


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

    def normalise(self, x: Tensor, eps: float = 1e-8) -> Tensor:
        return (x - self.mean) / (self.std + eps)

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

    Returns the PPO scores [N] and stats (raw mean, shaped mean, EOS rate, parse rate).
    """
    raw = raw.float()
    scores = raw
    if cfg.normalise:
        moments.update(raw)
        scores = moments.normalise(raw)
    if cfg.clip > 0:
        scores = scores.clamp(-cfg.clip, cfg.clip)
    has_eos, parsed = has_eos.to(raw.device), parsed.to(raw.device)
    scores = scores + cfg.missing_eos_penalty * (~has_eos).float()
    scores = scores + cfg.unparseable_penalty * (~parsed).float()
    stats = {
        "reward/raw_mean": raw.mean().item(),
        "reward/score_mean": scores.mean().item(),
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
