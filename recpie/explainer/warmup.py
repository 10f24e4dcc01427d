"""Supervised format warm-up: templated explanations grounded in the user's history and the candidates.

The templates read only what the prompt shows (history before the sample, its time, the candidates),
so by default the warm-up teaches the format and grounding, not the answer. Hindsight targets (``like``:
the sample's true next POI) do teach the answer, on train samples held out of everything else.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recpie.data.types import SECONDS_PER_HOUR, CheckinData
from recpie.explainer.parse import PREFIX, format_explanation
from recpie.explainer.prompts import Context, context, part_of_day, usual_time, visits
from recpie.utils.batching import length_groups


def _for(data: CheckinData, ctx: Context, j: int) -> list[str]:
    """Reasons for candidate j, most specific first (visits, category habit, closeness, timing)."""
    poi, km = int(ctx.candidates[j]), float(ctx.distance_km[j])
    seen = visits(data, ctx, poi)
    now = part_of_day(int(ctx.now_local // SECONDS_PER_HOUR % 24))
    reasons = []
    if len(seen):
        reasons.append(f"visited {len(seen)} time{'s' if len(seen) > 1 else ''} before")
        if usual_time(data, seen) == now:
            reasons.append(f"usually in the {now}, as now")
    else:
        cat = data.catalogue.category[poi]
        same = int((data.catalogue.category[data.poi[ctx.history]] == cat).sum())
        if same and data.catalogue.category_names[cat]:
            reasons.append(f"{same} earlier check-ins at a {data.catalogue.category_names[cat]}")
    if km < 0.05:
        reasons.append("right where they were last")
    elif km < 1.0:
        reasons.append(f"only {km:.1f} km from the last place")
    return reasons or [f"ranked {j + 1} of {len(ctx.candidates)} candidates"]


def _against(data: CheckinData, ctx: Context, j: int) -> list[str]:
    """Reasons against candidate j (novelty, distance, timing), never empty."""
    poi, km = int(ctx.candidates[j]), float(ctx.distance_km[j])
    seen = visits(data, ctx, poi)
    now = part_of_day(int(ctx.now_local // SECONDS_PER_HOUR % 24))
    reasons = ["never visited" if len(seen) == 0 else None]
    if len(seen) and usual_time(data, seen) != now:
        reasons.append(f"usually visited in the {usual_time(data, seen)}, not the {now}")
    if km >= 1.0:
        reasons.append(f"{km:.1f} km from the last place")
    reasons = [r for r in reasons if r]
    return reasons or [f"a routine place, less of a change for the {now}"]


def templated_explanation(data: CheckinData, split: str, i: int, candidates, cfg,
                          focus: int | None = None, like: int | None = None) -> str:
    """'may like: ... / may not like: ...' about the `like` candidate (default: the top one) vs the least
    supported other one (user granularity), or for and against the `focus` candidate (candidate
    granularity)."""
    ctx = context(data, split, i, candidates, cfg)
    label = data.catalogue.label
    if focus is not None:
        j = int(np.flatnonzero(ctx.candidates == focus)[0])
        return format_explanation(
            f"{label(focus)}, {', '.join(_for(data, ctx, j)[:2])}", ", ".join(_against(data, ctx, j)[:2])
        )
    liked = 0 if like is None else int(np.flatnonzero(ctx.candidates == like)[0])
    support = np.array([len(visits(data, ctx, int(p))) - 0.01 * km
                        for p, km in zip(ctx.candidates, ctx.distance_km, strict=True)])
    support[liked] = np.inf
    worst = int(np.argmin(support)) if len(ctx.candidates) > 1 else liked
    like_text = f"{label(int(ctx.candidates[liked]))}, {', '.join(_for(data, ctx, liked)[:2])}"
    dislike = f"{label(int(ctx.candidates[worst]))}, {', '.join(_against(data, ctx, worst)[:2])}"
    return format_explanation(like_text, dislike)


def sft_losses(explainer, prompts: list[str], targets: list[str], user_states: torch.Tensor | None
               ) -> Iterator[torch.Tensor]:
    """The mean token negative log-likelihood of target responses (the text after the forced 'may like:',
    then EOS) given prompt + soft prompt, through PPO's log-prob forward (same head, same temperature), in
    parts: micro-batches of similar-length rows (explainer.forward_tokens each), each part its rows'
    summed NLL over all rows' target tokens, computed only when the previous part has been consumed."""
    tok = explainer.tokenizer
    device = explainer.device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    bodies = [t[len(PREFIX):] if t.startswith(PREFIX) else t for t in targets]
    ids = [tok(b, add_special_tokens=False).input_ids + [tok.eos_token_id] for b in bodies]
    width = max(map(len, ids))
    seq = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(seq)
    for r, row in enumerate(ids):
        seq[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    seq, mask = seq.to(device), mask.to(device)
    scored = mask * explainer.head.contains(seq)  # a token the head cannot produce is read, not a target
    rows, row_mask = torch.cat([enc.input_ids, seq], 1), torch.cat([enc.attention_mask, mask], 1)
    tokens = scored.sum()
    for part in length_groups(row_mask.sum(1), explainer.cfg.forward_tokens):
        states = user_states[part] if user_states is not None else None
        logp = explainer.response_logprobs(rows[part], row_mask[part], scored[part], states).logprobs
        yield -logp.sum() / tokens
