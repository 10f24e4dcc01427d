"""Does "may like" know more than the recommender? Per candidate rank: how often the explanations name
that candidate, and how often the target is there when they do, against how often it is there at all.
Equal rates mean the verdict says nothing about the target that the rank did not already say.

Counts are one flat tensor (parsed, named[K], named_and_there[K], there[K]) so that DDP ranks can sum them.
"""
from __future__ import annotations

import torch


def verdict_pairs(z: torch.Tensor, k: int) -> torch.Tensor:
    """[n, K, 2] ("may like", "may not like" share per candidate) from the verdict encoder's flat [n, ..., 2K]."""
    return z.reshape(len(z), k, 2)


def verdict_counts(liked: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """liked [n,K]: each sample's "may like" share per candidate (all 0: unparseable or naming none);
    candidates [n,K] POIs; target [n]. Returns the flat counts over the parsed samples."""
    parsed = liked.sum(1) > 0
    liked, there = liked[parsed].float(), (candidates[parsed] == target[parsed, None]).float()
    return torch.cat([parsed.sum().view(1).float(), liked.sum(0), (liked * there).sum(0), there.sum(0)]).cpu()


def liked_target_share(liked: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[n]: each sample's "may like" share on its target (0: unparsed, naming another candidate, or the
    target is not among the candidates). Its mean is the explanation's hit rate, comparable to a top-1's."""
    return (liked.float() * (candidates == target[:, None])).sum(1)


def teacher_agreement(liked: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor,
                      teacher_top: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample [n], what the gate of a facts warm-up reads (benchmarks/verdict_information.py, the warm-up
    curve): liked [n,K] "may like" shares, candidates [n,K] as the prompt showed them, target [n],
    teacher_top [n] the position of the teacher's top-1. ``named``: "may like" names a candidate;
    ``agreement``: its share on the teacher's top-1 (a mention shared by candidates of one label counts its
    share); ``hit``: its share on the target (``liked_target_share``); ``top1_hit`` / ``teacher_hit``: the
    recommender's / the teacher's top-1 is the target. Where the teacher departs from the recommender's
    order is the only place a verdict says more than a rank: ``departs`` (the teacher's top-1 is not
    candidate 1), ``follows`` (the agreement there, 0 elsewhere: ``departure_agreement`` is their ratio of
    sums) and ``off_top1`` ("may like"'s share on candidates 2..K)."""
    rows = torch.arange(len(liked), device=liked.device)
    liked = liked.float()
    agreement, departs = liked[rows, teacher_top], (teacher_top != 0).float()
    return {"named": (liked.sum(1) > 0).float(), "agreement": agreement,
            "hit": liked_target_share(liked, candidates, target),
            "top1_hit": (candidates[:, 0] == target).float(),
            "teacher_hit": (candidates[rows, teacher_top] == target).float(),
            "departs": departs, "follows": agreement * departs, "off_top1": liked[:, 1:].sum(1)}


def departure_agreement(cols: dict[str, torch.Tensor]) -> float:
    """The agreement where the teacher departs from candidate 1 (``teacher_agreement``'s columns; NaN where it
    never does): what always naming candidate 1 misses, and a relay carries."""
    departs = float(cols["departs"].sum())
    return float(cols["follows"].sum()) / departs if departs else float("nan")


def verdict_summary(counts: torch.Tensor) -> dict:
    """Headline rates and the per-rank table's columns from summed counts."""
    k = (len(counts) - 1) // 3
    parsed, named, named_there, there = counts[0].item(), *counts[1:].view(3, k)
    known = there.sum().item()  # parsed samples whose target is among the candidates
    return {
        "parsed": parsed, "like_is_top1": named[0].item() / max(parsed, 1), "target_among_candidates": known,
        "like_is_target": named_there.sum().item() / max(known, 1), "top1_is_target": there[0].item() / max(known, 1),
        "named": named.tolist(),
        "target_there_when_named": torch.where(named > 0, named_there / named.clamp(min=1e-9), torch.nan).tolist(),
        "target_there": (there / max(parsed, 1)).tolist(),
    }


def verdict_table(v: dict) -> list[str]:
    """Markdown: one column per candidate rank."""
    ranks = range(1, len(v["named"]) + 1)
    row = lambda name, xs, fmt: f"| {name} | " + " | ".join(fmt.format(x) for x in xs) + " |"  # noqa: E731
    return [row('"may like" names candidate', ranks, "{}"), "|---" * (len(v["named"]) + 1) + "|",
            row("explanations naming it (shared labels split)", v["named"], "{:g}"),
            row("target there, when named", v["target_there_when_named"], "{:.3f}"),
            row("target there, all parsed", v["target_there"], "{:.3f}")]


def departure_precision(liked: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor,
                        teacher_top: torch.Tensor) -> dict[str, dict[str, float]]:
    """Where a verdict can pay: the samples whose "may like" (liked [n,K] shares; a sample counts under its
    largest share) names another candidate than the first, split by whether the teacher's top-1 (teacher_top
    [n] positions) is that same candidate, and the teacher's own departures. Per group: ``samples``, ``named``
    (how often the target is the named candidate) and ``first`` (how often it is candidate 1 on the same
    samples). A departure moves the fused ranking towards its candidate and away from candidate 1, so it pays
    on a group only where ``named`` exceeds ``first``; agreement with the teacher matters only through this."""
    rows = torch.arange(len(liked), device=liked.device)
    choice = liked.float().argmax(1)  # 0 for an unparsed text (no share anywhere): no departure
    hit = lambda col: (candidates[rows, col] == target).float()  # noqa: E731
    first = hit(torch.zeros_like(choice))
    departs = choice != 0
    groups = {"explainer departs, with the teacher": departs & (choice == teacher_top),
              "explainer departs, not with the teacher": departs & (choice != teacher_top),
              "teacher departs (its top-1)": teacher_top != 0}
    out = {}
    for name, mask in groups.items():
        col = teacher_top if name.startswith("teacher") else choice
        n = int(mask.sum())
        out[name] = {"samples": n, "named": float(hit(col)[mask].mean()) if n else float("nan"),
                     "first": float(first[mask].mean()) if n else float("nan")}
    return out
