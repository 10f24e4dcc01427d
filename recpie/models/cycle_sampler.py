"""Which train samples the recommender sees in each cycle of the joint phase, and which get explained.

Per cycle and rank the sampler makes a seeded pass over the train samples. Its first ``refresh_budget``
explainable samples get fresh explanations that cycle; every sample refreshed so far (any rank) forms
the *pool*, and some positions of the pass are given to pool samples, so the fusion sees explanations on
more rows than the refresh budget alone covers. Each pool sample fills at most ``explained_draws``
positions per cycle (over all ranks): a small pool drawn dozens of times per cycle is memorised, and
then the control, which draws the very same rows with null explanations, loses accuracy to its own
warm-up backbone. Everything is a function of (seed, cycle, rank), so a resumed run sees the same rows.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from recpie.config_checks import check_choice
from recpie.data.types import CheckinData
from recpie.models.recpie_config import SFTTarget
from recpie.utils.seeds import phase_seed


def explainable_train_ids(data: CheckinData) -> torch.Tensor:
    """Train samples a prompt can be built for: a few targets share their second with the user's first
    check-in and so have no history."""
    train = data.splits["train"]
    return torch.from_numpy(np.flatnonzero(train.history_end > data.user_start[data.user[train.target]]))


def warmup_and_fusion_ids(data: CheckinData, sft_target: str, sft_share: float, seed: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the train samples the explainer's warm-up reads, those refreshed, rolled out and fused). Template
    and facts targets never read the answer: both are all explainable samples. Hindsight targets do: a
    seeded ``sft_share`` of them goes to the warm-up alone, the rest to everything else, disjoint."""
    ids = explainable_train_ids(data)
    if sft_target in ("template", "facts"):
        return ids, ids
    check_choice("recpie.sft_target", sft_target, SFTTarget)
    if not 0 < sft_share < 1:
        raise ValueError(f"recpie.sft_share={sft_share} must lie strictly between 0 and 1 with hindsight targets")
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(phase_seed(seed, "sft_share")))]
    cut = round(sft_share * len(ids))
    return order[:cut].sort().values, order[cut:].sort().values


class CycleSampler(torch.utils.data.Sampler[int]):
    """Per cycle, ``per_rank`` train sample ids per rank, distinct across ranks in the plain pass."""

    def __init__(self, n: int, per_rank: int, seed: int, explainable: torch.Tensor, refresh_budget: int,
                 explained_share: float, explained_draws: float, rank: int = 0, world: int = 1):
        if not 0 <= explained_share <= 1 or explained_draws < 0:
            raise ValueError(f"recpie.explained_share={explained_share} must lie in [0, 1] and "
                             f"recpie.explained_draws={explained_draws} must be >= 0")
        self.n, self.per_rank, self.seed, self.rank, self.world = n, per_rank, seed, rank, world
        self.explainable, self.refresh_budget = explainable, refresh_budget
        self.explained_share, self.explained_draws = explained_share, explained_draws
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plain_pass(self, epoch: int, rank: int) -> torch.Tensor:
        """Rank ``rank``'s share of a seeded pass over the train samples (repeated if it must be longer)."""
        g = torch.Generator().manual_seed(phase_seed(self.seed, epoch, "cycle"))
        need = self.per_rank * self.world
        order = torch.cat([torch.randperm(self.n, generator=g) for _ in range(-(-need // self.n))])[:need]
        return order[rank::self.world]

    def refreshed(self, epoch: int, rank: int) -> torch.Tensor:
        """The samples rank ``rank`` explains afresh in cycle ``epoch``: the first refresh_budget
        explainable ones of its plain pass."""
        ids = self.plain_pass(epoch, rank)
        return ids[torch.isin(ids, self.explainable)][: self.refresh_budget]

    def pool(self, epoch: int) -> torch.Tensor:
        """Every sample refreshed up to and including cycle ``epoch``, on any rank (sorted)."""
        return torch.unique(torch.cat([self.refreshed(e, r) for e in range(epoch + 1) for r in range(self.world)]))

    def explained_rows(self, pool_size: int) -> int:
        """Positions per rank given to pool samples: explained_share of the rows, at most explained_draws
        per pool sample over all ranks."""
        wanted = round(self.explained_share * self.per_rank)
        return min(wanted, math.floor(self.explained_draws * pool_size / self.world))

    def indices_for_epoch(self, epoch: int, rank: int | None = None) -> torch.Tensor:
        """The samples of ``rank`` (default: this sampler's) in cycle ``epoch``, pool draws mixed in."""
        rank = self.rank if rank is None else rank
        order = self.plain_pass(epoch, rank).clone()
        pool = self.pool(epoch)
        k = self.explained_rows(len(pool))
        if k == 0:
            return order
        # draws for all ranks from one generator, as whole permutations of the pool: no sample is drawn
        # more than ceil(k * world / |pool|) times in the cycle
        g = torch.Generator().manual_seed(phase_seed(self.seed, epoch, "explained"))
        draws = torch.cat([pool[torch.randperm(len(pool), generator=g)]
                           for _ in range(-(-k * self.world // len(pool)))])[: k * self.world]
        where = torch.Generator().manual_seed(phase_seed(self.seed, epoch, rank, "positions"))
        order[torch.randperm(self.per_rank, generator=where)[:k]] = draws[rank::self.world]
        return order

    def __iter__(self):
        return iter(self.indices_for_epoch(self.epoch).tolist())

    def __len__(self) -> int:
        return self.per_rank
