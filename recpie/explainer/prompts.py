"""Prompts from the processed data: recent history, the sample's time, the recommender's top-K candidates.

Only the sample's history slice (check-ins strictly before the target) and the sample's own timestamp
are read, never the target's POI: a prompt cannot see the future. Every prompt ends with the forced
prefix 'may like:' so even a base model continues in the explanation format.

``CandidateFacts`` is the one list of what a prompt states about each candidate: ``render`` writes every
field of it into the candidate's line (and the part of the day into the "Now:" line), and nothing else
that the prompt says about a candidate is read by a reader downstream: the information bound and the
warm-up's teacher (explainer/information.py) and the warm-up's reasons (explainer/warmup.py) read these
fields alone (tests/test_prompt_facts.py parses them back out of the prompt text).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from recpie.data.geo import haversine_km
from recpie.data.types import SECONDS_PER_HOUR, CheckinData
from recpie.explainer.parse import PREFIX

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
FEW_SHOT = (
    "Example.\nRecent check-ins (oldest first):\n- Mon 08:10 Coffee Shop\n- Mon 12:30 Office\n"
    "- Mon 19:05 Gym / Fitness Center\nNow: Tue 08:05 (morning)\nCandidates (distance from the last place):\n"
    "1. Coffee Shop, 0.2 km, 9 earlier visits, mostly morning\n2. Bar, 1.1 km, never visited\n"
    "Explanation: may like: the Coffee Shop, visited on weekday mornings and 0.2 km away"
    " / may not like: the Bar, an evening place 1.1 km away at breakfast time\n\n"
)


def part_of_day(hour: int) -> str:
    if 5 <= hour < 11:
        return "morning"
    if 11 <= hour < 14:
        return "midday"
    if 14 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


@dataclass(frozen=True)
class Context:
    """Everything a prompt (and a templated explanation) may use for one sample."""

    key: str  # stable sample key, e.g. "test:17"
    history: np.ndarray  # check-in indices of the whole history, oldest first (all < the sample's time)
    shown: np.ndarray  # the most recent `history_len` of them, shown in the prompt
    now_local: int  # the sample's local time in seconds (the moment the recommendation is asked for)
    candidates: np.ndarray  # POI indices, the recommender's top-K, best first
    distance_km: np.ndarray  # [K] distance of each candidate from the last history place


def _when(local_seconds: int) -> str:
    hours = local_seconds // SECONDS_PER_HOUR
    day = DAYS[int((hours // 24 + 3) % 7)]  # the epoch fell on a Thursday
    return f"{day} {int(hours % 24):02d}:{int(local_seconds % 3600 // 60):02d}"


def context(data: CheckinData, split: str, i: int, candidates, cfg) -> Context:
    """The sample's history slice, its own local time and the first cfg.num_candidates candidates."""
    hist = data.history(split, i)
    if len(hist) == 0:
        raise ValueError(f"sample {split}:{i} has an empty history; the protocol never produces one")
    cands = np.asarray(candidates, dtype=np.int64)[: cfg.num_candidates]
    cat = data.catalogue
    last = data.poi[hist[-1]]
    dist = haversine_km(cat.lat[last], cat.lon[last], cat.lat[cands], cat.lon[cands])
    now = int(data.local_seconds(data.splits[split].target[i]))
    return Context(f"{split}:{i}", hist, hist[-cfg.history_len:], now, cands, dist)


@dataclass(frozen=True)
class CandidateFacts:
    """What the prompt states about one candidate, field by field (its line: "<rank>. <label>, <km> km,
    <visits> earlier visits, mostly <usual>" or "never visited"; ``now`` is on the "Now:" line)."""

    rank: int  # its number in the list (1 = the recommender's top)
    km: float  # distance from the last history place, rounded as printed (0.1 km)
    visits: int  # check-ins at it in the whole history (the prompt shows only the recent part of the history)
    usual: str  # the most common part of the day of those visits ("" when never visited)
    now: str  # the part of the day of the sample's own time

    @property
    def habit(self) -> str:
        """The candidate line's last part, what the history says about it."""
        if self.visits == 0:
            return "never visited"
        return f"{self.visits} earlier visit{'s' if self.visits > 1 else ''}, mostly {self.usual}"


def candidate_facts(data: CheckinData, ctx: Context) -> list[CandidateFacts]:
    """The facts the prompt states about each of ``ctx``'s candidates, in their order."""
    now = now_part(ctx)
    out = []
    for j, p in enumerate(ctx.candidates):
        seen = visits(data, ctx, int(p))
        out.append(CandidateFacts(j + 1, round(float(ctx.distance_km[j]), 1), len(seen),
                                  usual_time(data, seen) if len(seen) else "", now))
    return out


def now_part(ctx: Context) -> str:
    """The part of the day of the sample's own time (stated on the "Now:" line)."""
    return part_of_day(int(ctx.now_local // SECONDS_PER_HOUR % 24))


def visits(data: CheckinData, ctx: Context, poi: int) -> np.ndarray:
    """The sample's history check-ins at `poi`."""
    return ctx.history[data.poi[ctx.history] == poi]


def usual_time(data: CheckinData, checkins: np.ndarray) -> str:
    """The most common part of the day of these check-ins (local time, oldest first); a tie goes to the part
    of the most recent of them, so the prompt is the same in every process."""
    parts = [part_of_day(int(h)) for h in (data.local_seconds(checkins) // SECONDS_PER_HOUR) % 24]
    return Counter(reversed(parts)).most_common(1)[0][0]  # most_common keeps first-seen order among ties


def render(data: CheckinData, ctx: Context, cfg, focus: int | None = None) -> str:
    """The prompt text; with `focus` (a candidate POI, candidate granularity) only that one is listed."""
    cat = data.catalogue
    keep = np.arange(len(ctx.candidates)) if focus is None else np.flatnonzero(ctx.candidates == focus)
    if len(keep) == 0:
        raise ValueError(f"focus POI {focus} is not a candidate of {ctx.key}: {ctx.candidates.tolist()}")
    lines = ["Recent check-ins (oldest first):"]
    lines += [f"- {_when(int(data.local_seconds(c)))} {cat.label(int(data.poi[c]))}" for c in ctx.shown]
    lines.append(f"Now: {_when(ctx.now_local)} ({now_part(ctx)})")
    lines.append("Candidates (distance from the last place):")
    facts = candidate_facts(data, ctx)
    lines += [f"{n + 1}. {cat.label(int(ctx.candidates[j]))}, {facts[j].km:.1f} km, {facts[j].habit}"
              for n, j in enumerate(keep)]
    head = FEW_SHOT if cfg.few_shot else ""
    return head + "\n".join(lines) + f"\nExplanation: {PREFIX}"


def build_prompt(data: CheckinData, split: str, i: int, candidates, cfg, focus: int | None = None) -> str:
    """Prompt of sample i of `split` given the recommender's top-K `candidates` (POI indices, best first)."""
    return render(data, context(data, split, i, candidates, cfg), cfg, focus)
