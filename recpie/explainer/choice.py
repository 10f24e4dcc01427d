"""The K-way choice (explainer.choice=scored or readout): "may like" and "may not like" chosen among the
prompt's K candidates by one distribution pi (Explainer.choice_groups: the LLM's likelihood of each
candidate's name, or a readout of its prompt line), trained on a teacher's order.

The generated choice did not learn the facts teacher's (issue 22, 3% of the NYC targets, seed 0: "may like"
named the teacher's top-1 on 36% of val samples after 192 warm-up examples, below the 65% of always naming
candidate 1; the warm-up curve stayed at 0.41-0.62 from 128 to 384 examples). Here the choice is one
K-way distribution trained by a listwise cross-entropy (Plackett-Luce) on the teacher's whole order, so
every warm-up example's gradient is the choice's; the reasons are the templates of what the prompt states
(warmup.templated_choice), true by construction.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recpie.explainer.explainer import Explainer


def choice_positions(logp: torch.Tensor, labels: list[list[str]], margin: float = 0.0
                     ) -> tuple[list[int], list[int]]:
    """(the "may like" position, the "may not like" position) per row of log pi [n, K]: the most likely
    candidate (the best-ranked on a tie) where it beats candidate 1 by more than ``margin`` in log pi, else
    candidate 1 (explainer.depart_margin), and the least likely candidate of another label (a text names a
    candidate by its label, so one of the same label would name "may like"'s too); with a single label
    among the K, the least likely other candidate."""
    likes, dislikes = [], []
    for row, names in zip(logp.detach().cpu().tolist(), labels, strict=True):
        best = int(np.argmax(row))
        like = best if row[best] - row[0] > margin else 0
        likes.append(like)
        dislikes.append(least_likely_other(row, names, like))
    return likes, dislikes


def least_likely_other(row: list[float], names: list[str], like: int) -> int:
    """The "may not like" position of one prompt whose "may like" is ``like``: the least likely candidate
    under ``row`` (log pi [K]) whose name differs from ``like``'s (the worse-ranked on a tie); with a single
    name among the K, the least likely other candidate."""
    others = [j for j in range(len(row)) if names[j] != names[like]] or \
        [j for j in range(len(row)) if j != like] or [like]
    return min(others, key=lambda j: (row[j], -j))


def listwise_loss(logp: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """[n] Plackett-Luce negative log-likelihood of each row's ``order`` (positions, best first) under the
    scores ``logp`` [n, K]: sum over r of -s(o_r) + logsumexp of s over o_r..o_K; its first term is the
    cross-entropy of the top-1, its last pair the order of the two least likely."""
    ranked = logp.gather(1, order.to(logp.device))
    tails = torch.logcumsumexp(ranked.flip(1), 1).flip(1)  # logsumexp over positions r.. of the order
    return (tails - ranked)[:, :-1].sum(1)


def choice_losses(explainer: Explainer, prompts: list[str], labels: list[list[str]], order: torch.Tensor,
                  user_states: torch.Tensor | None) -> Iterator[torch.Tensor]:
    """The warm-up loss of a scored choice in parts (one per group of similar-length prompts, computed when
    the previous part has been consumed): the mean over rows of ``listwise_loss`` of the teacher's
    ``order`` [n, K] under the explainer's pi."""
    for rows, logp in explainer.choice_groups(prompts, labels, user_states):
        yield listwise_loss(logp, order[rows]).sum() / len(prompts)


def order_with_first(candidates: torch.Tensor, first: list[int]) -> torch.Tensor:
    """[n, K] positions: the candidate ``first[r]`` (a POI among row r's candidates) first, then the others
    in the recommender's order (the hindsight warm-up's order)."""
    k = candidates.shape[1]
    out = []
    for row, poi in zip(candidates.tolist(), first, strict=True):
        top = row.index(poi)
        out.append([top] + [j for j in range(k) if j != top])
    return torch.tensor(out, dtype=torch.long)
