"""Supervised format warm-up: templated explanations grounded in the user's history and the candidates.

The templates read only what the prompt states (``prompts.CandidateFacts``: rank, distance, visits, the
usual part of the day and now's, with explainer.show_scores the recommender's share), so the reasons of
every target are facts the explainer can see. What "may like" names (``recpie.sft_target``):

- ``template``: the recommender's top candidate (teaches the format and grounding, not the answer);
- ``hindsight``: the sample's true next POI, on train samples held out of everything else (teaches the
  answer, which the prompt cannot reveal);
- ``facts``: the choice of ``FactsTeacher``, the prompt-only facts reader of the information bound: its
  top-1, and "may not like" its lowest. A function of the prompt alone, never of the target, so the
  explainer learns a choice it can make from what it reads (issue 22: relaying this teacher's choice
  carries most of the bound: +0.0265 of +0.0309 MRR at 3% of the targets).

``sft_losses`` weights the name tokens of the choice (``recpie.sft_choice_weight``) above the token mean.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recpie.components.backbone import Backbone
from recpie.data.types import CheckinData
from recpie.explainer.information import features, prompt_facts, prompt_reader, top_k
from recpie.explainer.parse import CHOICE_END, PREFIX, format_explanation
from recpie.explainer.prompts import CandidateFacts, candidate_facts, context, share_text
from recpie.utils.batching import length_groups


def _for(f: CandidateFacts, k: int) -> list[str]:
    """Reasons for a candidate, most specific first (visits, timing, closeness), from its stated facts
    (``k``: the number of candidates)."""
    reasons = []
    if f.visits:
        reasons.append(f"visited {f.visits} time{'s' if f.visits > 1 else ''} before")
        if f.usual == f.now:
            reasons.append(f"usually in the {f.now}, as now")
    if f.km < 0.05:
        reasons.append("right where they were last")
    elif f.km < 1.0:
        reasons.append(f"only {f.km:.1f} km from the last place")
    if not reasons and f.share is not None:
        return [f"ranked {f.rank} of {k} candidates, {share_text(f.share)} by the recommender"]
    return reasons or [f"ranked {f.rank} of {k} candidates"]


def _against(f: CandidateFacts) -> list[str]:
    """Reasons against a candidate (novelty, timing, distance) from its stated facts, never empty."""
    reasons = ["never visited" if f.visits == 0 else None]
    if f.visits and f.usual != f.now:
        reasons.append(f"usually visited in the {f.usual}, not the {f.now}")
    if f.km >= 1.0:
        reasons.append(f"{f.km:.1f} km from the last place")
    reasons = [r for r in reasons if r]
    return reasons or [f"a routine place, less of a change for the {f.now}"]


@dataclass(frozen=True)
class Templated:
    """A warm-up target and the candidate names its choice consists of, in the order they appear."""

    text: str
    names: list[str]


def templated_choice(data: CheckinData, split: str, i: int, candidates, cfg, focus: int | None = None,
                     like: int | None = None, dislike: int | None = None, logits=None) -> Templated:
    """'may like: ... / may not like: ...' about the `like` candidate (default: the top one) vs the
    `dislike` one (default: the least supported other one) (user granularity), or for and against the
    `focus` candidate (candidate granularity), with the names the text chooses; ``logits``: the
    candidates' logits (needed with cfg.show_scores, whose prompt states them)."""
    ctx = context(data, split, i, candidates, cfg, logits)
    facts, label, k = candidate_facts(data, ctx), data.catalogue.label, len(ctx.candidates)
    if focus is not None:
        j = int(np.flatnonzero(ctx.candidates == focus)[0])
        name = label(focus)
        return Templated(format_explanation(f"{name}{CHOICE_END} {', '.join(_for(facts[j], k)[:2])}",
                                            ", ".join(_against(facts[j])[:2])), [name])
    liked = 0 if like is None else int(np.flatnonzero(ctx.candidates == like)[0])
    if dislike is not None:
        worst = int(np.flatnonzero(ctx.candidates == dislike)[0])
    else:
        support = np.array([f.visits - 0.01 * f.km for f in facts])
        support[liked] = np.inf
        worst = int(np.argmin(support)) if k > 1 else liked
    names = [label(int(ctx.candidates[liked])), label(int(ctx.candidates[worst]))]
    return Templated(format_explanation(f"{names[0]}{CHOICE_END} {', '.join(_for(facts[liked], k)[:2])}",
                                        f"{names[1]}{CHOICE_END} {', '.join(_against(facts[worst])[:2])}"), names)


def templated_explanation(data: CheckinData, split: str, i: int, candidates, cfg, focus: int | None = None,
                          like: int | None = None, dislike: int | None = None, logits=None) -> str:
    """The text of ``templated_choice``."""
    return templated_choice(data, split, i, candidates, cfg, focus, like, dislike, logits).text


class FactsTeacher:
    """The warm-up's teacher of ``recpie.sft_target=facts``: the prompt-only facts reader
    (``information.prompt_reader``: the candidates' ranks and what the prompt states about them, nothing
    else) fitted on every val sample with the backbone's top-K, the same reader as the information bound.

    Fitted on val, not on train: the backbone trained on the train targets, so on train rows its order is
    right more often than on any sample it was not fitted on, and a reader fitted there would learn to
    trust the rank more than it deserves on the samples it is used for. No val target is ever shown to the
    explainer: they enter through the reader's dozen weights alone (val also selects checkpoints; the test
    samples stay untouched)."""

    def __init__(self, reader: torch.nn.Linear, val_fitted: int):
        self.reader, self.val_fitted = reader, val_fitted

    @classmethod
    def fit(cls, backbone: Backbone, data: CheckinData, cfg) -> FactsTeacher:
        """Fitted with ``backbone``'s top ``cfg.explainer.num_candidates`` on all val samples."""
        ids = np.arange(len(data.splits["val"]))
        view = top_k(backbone, data, "val", ids, cfg.explainer.num_candidates, cfg.data.max_len,
                     cfg.data.history_summary)
        reader = prompt_reader(view, prompt_facts(data, "val", ids, view.candidates, cfg.explainer, view.logits))
        return cls(reader, int((view.slot >= 0).sum()))

    @torch.no_grad()
    def order(self, data: CheckinData, split: str, ids, candidates, explainer_cfg, logits=None) -> np.ndarray:
        """int64 [n, K]: each sample's candidate positions, the teacher's best first, from its prompt alone
        (``logits`` [n, K]: the candidates' logits, which a prompt of explainer.show_scores states)."""
        facts = prompt_facts(data, split, np.asarray(ids), np.asarray(candidates), explainer_cfg,
                             None if logits is None else np.asarray(logits))
        scores = self.reader(features(facts)).squeeze(-1).numpy()
        return np.argsort(-scores, axis=1, kind="stable")

    def choice(self, data: CheckinData, split: str, ids, candidates, explainer_cfg, logits=None
               ) -> tuple[list[int], list[int]]:
        """(the POI "may like" names, the POI "may not like" names) per sample: the teacher's top-1 and lowest."""
        cands = np.asarray(candidates)
        order = self.order(data, split, ids, cands, explainer_cfg, logits)
        rows = np.arange(len(cands))
        return cands[rows, order[:, 0]].tolist(), cands[rows, order[:, -1]].tolist()


def choice_weights(tokenizer, body: str, names: list[str], weight: float) -> list[float]:
    """Per token of ``body`` (tokenised as the warm-up does): 1 + ``weight`` where it overlaps one of the
    ``names`` (each found after the previous one), else 1."""
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    spans, cursor = [], 0
    for name in names:
        at = body.find(name, cursor)
        if at >= 0:
            spans.append((at, at + len(name)))
            cursor = at + len(name)
    return [1.0 + weight * any(a < e and b > s for s, e in spans) for a, b in enc.offset_mapping]


def sft_losses(explainer, prompts: list[str], targets: list[str], user_states: torch.Tensor | None,
               names: list[list[str]] | None = None, choice_weight: float = 0.0) -> Iterator[torch.Tensor]:
    """The token-weighted mean negative log-likelihood of target responses (the text after the forced 'may
    like:', then EOS) given prompt + soft prompt, through PPO's log-prob forward (same head, same
    temperature), in parts: micro-batches of similar-length rows (explainer.forward_tokens each), each part
    its rows' weighted NLL summed over the weight of all rows' target tokens, computed only when the
    previous part has been consumed. A token weighs 1, and 1 + ``choice_weight`` where it spells one of its
    target's ``names`` (the candidates the explanation chooses; ``Templated.names``)."""
    tok = explainer.tokenizer
    device = explainer.device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    bodies = [t[len(PREFIX):] if t.startswith(PREFIX) else t for t in targets]
    ids = [tok(b, add_special_tokens=False).input_ids + [tok.eos_token_id] for b in bodies]
    width = max(map(len, ids))
    seq = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(seq)
    weight = torch.zeros(len(ids), width)
    for r, row in enumerate(ids):
        seq[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        weight[r, :len(row)] = 1.0
        if choice_weight and names is not None:
            weight[r, :len(row) - 1] = torch.tensor(choice_weights(tok, bodies[r], names[r], choice_weight))
    seq, mask = seq.to(device), mask.to(device)
    scored = mask * explainer.head.contains(seq)  # a token the head cannot produce is read, not a target
    weight = weight.to(device) * scored
    rows, row_mask = torch.cat([enc.input_ids, seq], 1), torch.cat([enc.attention_mask, mask], 1)
    total = weight.sum()
    for part in length_groups(row_mask.sum(1), explainer.cfg.forward_tokens):
        states = user_states[part] if user_states is not None else None
        logp = explainer.response_logprobs(rows[part], row_mask[part], scored[part], states).logprobs
        yield -(logp * weight[part]).sum() / total
