"""Prompts from the processed data: recent history, the sample's time, the recommender's top-K candidates.

Only the sample's history slice (check-ins strictly before the target) and the sample's own timestamp
are read, never the target's POI: a prompt cannot see the future. Every prompt ends with the forced
prefix 'may like:' so even a base model continues in the explanation format.

``CandidateFacts`` is the one list of what a prompt states about each candidate: ``render`` writes every
field of it into the candidate's line (and the part of the day into the "Now:" line), and nothing else
that the prompt says about a candidate is read by a reader downstream: the information bound and the
warm-up's teacher (explainer/information.py) and the warm-up's reasons (explainer/warmup.py) read these
fields alone (tests/test_prompt_facts.py parses them back out of the prompt text).

With ``explainer.show_scores`` each candidate line also states the recommender's score: the candidate's
share of the recommender's probability among the K shown (softmax of their K logits) in percent to two
significant digits ("..., mostly evening, recommender 34%", "9.4%", "0.081%"; below 0.01% "<0.01%"). Two
digits down to 0.01%, not whole percents: a tuned low-fraction backbone gives its top-1 a median 87% and
ranks 3-5 medians of 0.6%, 0.08% and 0.02%, and the bound read through whole percents ("<1%" below) kept
+0.0101 of the exact logit margin's +0.0143 test MRR at 3% of the targets, through two digits +0.0152
(seed 0; docs/results.md). Every builder of a prompt or of its facts then needs the candidates' logits
(``context``'s ``logits``); without the flag they are ignored and every prompt is what it was before the
flag existed, byte for byte.
"""
from __future__ import annotations

import math
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
# the header of the candidate list, and the worked example, when the prompt states the recommender's score
CANDIDATES = "Candidates (distance from the last place):"
SCORED_CANDIDATES = "Candidates (distance from the last place; the recommender's share among them):"
FEW_SHOT_SCORED = (FEW_SHOT.replace(CANDIDATES, SCORED_CANDIDATES)
                   .replace("mostly morning\n", "mostly morning, recommender 81%\n")
                   .replace("never visited\n", "never visited, recommender 19%\n"))


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
    # [K] each candidate's recommender share among the K in percent as printed (``shares``); None: not shown
    shares: tuple[float, ...] | None = None
    habit_match: bool = False  # explainer.habit_match: a visited candidate's line says whether its usual part is now's


def _when(local_seconds: int) -> str:
    hours = local_seconds // SECONDS_PER_HOUR
    day = DAYS[int((hours // 24 + 3) % 7)]  # the epoch fell on a Thursday
    return f"{day} {int(hours % 24):02d}:{int(local_seconds % 3600 // 60):02d}"


SHARE_FLOOR = 0.01  # percent: a smaller share is printed "<0.01%" (its ``shares`` value is 0.0)


def shares(logits) -> tuple[float, ...]:
    """Each candidate's share of the recommender's probability among these candidates (softmax of their
    logits) in percent, rounded to two significant digits as the prompt prints it (0.0: below
    ``SHARE_FLOOR``, printed "<0.01%")."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max())
    out = []
    for x in (100 * p / p.sum()).tolist():
        out.append(0.0 if x < SHARE_FLOOR else round(x, 1 - math.floor(math.log10(x))))
    return tuple(out)


def share_text(share: float) -> str:
    """How the prompt prints a share of ``shares``: "34%", "9.4%", "0.081%", or "<0.01%" for 0.0."""
    return f"{share:g}%" if share > 0 else f"<{SHARE_FLOOR:g}%"


def context(data: CheckinData, split: str, i: int, candidates, cfg, logits=None) -> Context:
    """The sample's history slice, its own local time and the first cfg.num_candidates candidates;
    ``logits``: the recommender's logits of those candidates (same order), read only with cfg.show_scores
    (which needs them)."""
    hist = data.history(split, i)
    if len(hist) == 0:
        raise ValueError(f"sample {split}:{i} has an empty history; the protocol never produces one")
    cands = np.asarray(candidates, dtype=np.int64)[: cfg.num_candidates]
    cat = data.catalogue
    last = data.poi[hist[-1]]
    dist = haversine_km(cat.lat[last], cat.lon[last], cat.lat[cands], cat.lon[cands])
    now = int(data.local_seconds(data.splits[split].target[i]))
    shown = None
    if cfg.show_scores:
        if logits is None:
            raise ValueError(f"explainer.show_scores: the prompt of {split}:{i} states the recommender's score of "
                             "each candidate, so its builder needs the candidates' logits")
        scores = np.asarray(logits, dtype=np.float64).reshape(-1)[: cfg.num_candidates]
        if len(scores) != len(cands):
            raise ValueError(f"{split}:{i}: {len(scores)} logits for {len(cands)} candidates")
        shown = shares(scores)
    return Context(f"{split}:{i}", hist, hist[-cfg.history_len:], now, cands, dist, shown, bool(cfg.habit_match))


@dataclass(frozen=True)
class CandidateFacts:
    """What the prompt states about one candidate, field by field (its line: "<rank>. <label>, <km> km,
    <visits> earlier visits, mostly <usual>" or "never visited", with explainer.habit_match then ", as now"
    or ", not now" after a usual part, then with explainer.show_scores ", recommender <share>%"; ``now`` is on
    the "Now:" line)."""

    rank: int  # its number in the list (1 = the recommender's top)
    km: float  # distance from the last history place, rounded as printed (0.1 km)
    visits: int  # check-ins at it in the whole history (the prompt shows only the recent part of the history)
    usual: str  # the most common part of the day of those visits ("" when never visited)
    now: str  # the part of the day of the sample's own time
    # the recommender's probability of it among the K shown, in percent as printed (two significant digits;
    # 0.0: "<0.01%"); None: the prompt states no score (explainer.show_scores=false)
    share: float | None = None
    match: bool = False  # the line states whether ``usual`` is ``now`` (explainer.habit_match)

    @property
    def habit(self) -> str:
        """The candidate line's last part, what the history says about it."""
        if self.visits == 0:
            return "never visited"
        said = f"{self.visits} earlier visit{'s' if self.visits > 1 else ''}, mostly {self.usual}"
        return said + (", as now" if self.usual == self.now else ", not now") if self.match else said

    @property
    def score(self) -> str:
        """What the candidate line ends with about the recommender's score ("" when none is shown)."""
        return "" if self.share is None else f", recommender {share_text(self.share)}"


def candidate_facts(data: CheckinData, ctx: Context) -> list[CandidateFacts]:
    """The facts the prompt states about each of ``ctx``'s candidates, in their order."""
    now = now_part(ctx)
    out = []
    for j, p in enumerate(ctx.candidates):
        seen = visits(data, ctx, int(p))
        out.append(CandidateFacts(j + 1, round(float(ctx.distance_km[j]), 1), len(seen),
                                  usual_time(data, seen) if len(seen) else "", now,
                                  None if ctx.shares is None else ctx.shares[j], ctx.habit_match))
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
    scored = ctx.shares is not None
    lines.append(SCORED_CANDIDATES if scored else CANDIDATES)
    facts = candidate_facts(data, ctx)
    lines += [f"{n + 1}. {cat.label(int(ctx.candidates[j]))}, {facts[j].km:.1f} km, {facts[j].habit}{facts[j].score}"
              for n, j in enumerate(keep)]
    head = (FEW_SHOT_SCORED if scored else FEW_SHOT) if cfg.few_shot else ""
    return head + "\n".join(lines) + f"\nExplanation: {PREFIX}"


def candidate_line_ends(prompt: str, k: int) -> list[int]:
    """The character offsets of the last character of each of the ``k`` candidate lines of a prompt that
    ``render`` wrote (the lines after the candidates' header, in their order)."""
    header = max(prompt.rfind(SCORED_CANDIDATES), prompt.rfind(CANDIDATES))
    if header < 0:
        raise ValueError("the prompt has no candidate list (its header line is missing)")
    ends, at = [], prompt.index("\n", header)
    for _ in range(k):
        end = prompt.index("\n", at + 1)
        ends.append(end - 1)
        at = end
    return ends


def build_prompt(data: CheckinData, split: str, i: int, candidates, cfg, focus: int | None = None,
                 logits=None) -> str:
    """Prompt of sample i of `split` given the recommender's top-K `candidates` (POI indices, best first) and,
    with cfg.show_scores, their ``logits``."""
    return render(data, context(data, split, i, candidates, cfg, logits), cfg, focus)
