"""How much could any reader of the explainer's prompt add to the recommender's order? (the information bound)

The explainer reads a prompt that states, per top-K candidate, its rank (its number in the list), the
distance from the last place, the user's visit count and the usual part of the day of those visits, and
the sample's own part of the day (``prompts.CandidateFacts``). A verdict that re-ranks the top-K can only
help if those facts carry information beyond the ranking. ``facts_bound`` fits a linear re-ranker of the
top-K on the *val* samples (targets no backbone trained on) and scores it on the test samples against the
backbone's own order. Before any expensive explainer run, this says how much room there is.

**The bound reads only what the prompt states** (FACTS_VERSION 3): its features are functions of
``CandidateFacts`` alone (``FACTS``), so a perfect reader of the prompt could reach it. Until version 2
the reader also read the backbone's logit margin and the whole history's same-category visits, which no
prompt showed; dropping them cost little (issue 22, seed 0, all 2,096 test samples: +0.0313 -> +0.0309
MRR at 3% of the targets, +0.0140 -> +0.0115 at 12%), so the prompt stayed as it was and the reader gave
them up. The same fitted reader is the warm-up's teacher (``recpie.sft_target=facts``, warmup.py).
``features(facts, logits)`` can still add the logit margin for readers of more than the prompt
(benchmarks/verdict_information.py's "rank + logit"). benchmarks/prompt_information.py adds the LLM's
own log-likelihood of each candidate as a further feature.

With ``explainer.show_scores`` the prompt also states each candidate's share of the recommender's
probability among the K (prompts.py), and the reader reads it as printed (``SCORE_FEATURES``: the log of
the printed percent, "<0.01%" read as 0.005%), so the bound, the facts teacher and the relay see the score a
reader of that prompt sees (``fact_names``: the features of a config's prompts).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.components.fusion import VerdictReranker, fit_listwise
from recpie.data.types import CheckinData
from recpie.evaluation.ranking import ranks_from_scores
from recpie.explainer.prompts import SHARE_FLOOR, CandidateFacts, candidate_facts, context

# what the facts of a prompt are; bump it when they change, so saved bounds are recomputed (2: a tie in
# a place's usual part of the day goes to its most recent visit, no longer to a per-process set order;
# 3: only what the prompt states, no same-category counts, the distance as printed, no logit margin).
# A prompt that states the recommender's score (explainer.show_scores) has other facts, so its bound is
# recorded as FACTS_VERSION with "+scores" (``facts_version``: "3+scores"), never equal to a bound of the
# prompt without scores: a study point read under the other setting is recomputed, never mixed. The
# version of prompts without scores stays the plain number, so their saved bounds stay valid.
FACTS_VERSION = 3
# the reader's features, each a function of what the prompt states about one candidate (its rank enters
# as a one-hot in ``features``)
FACT_FEATURES = {
    "log1p visits": lambda f: np.log1p(f.visits),
    "usual part of day is now's": lambda f: float(f.visits > 0 and f.usual == f.now),
    "log1p km from the last place": lambda f: np.log1p(f.km),
    "visited at all": lambda f: float(f.visits > 0),
}
# with explainer.show_scores: the recommender's share as printed (percent, two significant digits; "<0.01%",
# a share of 0.0, read as half the floor)
SCORE_FEATURES = {
    "log printed recommender share": lambda f: np.log(max(f.share, SHARE_FLOOR / 2) / 100),
}
FACTS = list(FACT_FEATURES)  # the features of a prompt without scores (``fact_names``: of any config's)


def fact_names(explainer_cfg) -> list[str]:
    """The reader's features of the prompts of ``explainer_cfg`` (``FACTS``, and the score where shown)."""
    return FACTS + (list(SCORE_FEATURES) if explainer_cfg.show_scores else [])


def facts_version(explainer_cfg) -> int | str:
    """What a bound read from the prompts of ``explainer_cfg`` records: ``FACTS_VERSION``, or with
    explainer.show_scores f"{FACTS_VERSION}+scores"."""
    return f"{FACTS_VERSION}+scores" if explainer_cfg.show_scores else FACTS_VERSION


@dataclass
class TopK:
    """The backbone's view of some samples of one split."""

    candidates: np.ndarray  # int64 [n, K]: POIs in the backbone's order
    logits: np.ndarray  # float32 [n, K]
    target: np.ndarray  # int64 [n]: the true next POI
    ranks: np.ndarray  # float64 [n]: the target's rank over all POIs (the evaluator's tie rule)
    states: np.ndarray  # float32 [n, d]: user states h

    @property
    def slot(self) -> np.ndarray:
        """int64 [n]: the target's position among the candidates, -1 when it is not one of them."""
        hit = self.candidates == self.target[:, None]
        return np.where(hit.any(1), hit.argmax(1), -1)


@torch.no_grad()
def top_k(backbone: Backbone, data: CheckinData, split: str, ids: np.ndarray, k: int, max_len: int,
          summary: bool, batch: int = 256) -> TopK:
    """The backbone's top-K, logits, full ranks and user states for samples ``ids`` of ``split`` (on the
    backbone's device, in eval mode; its mode is restored after)."""
    training, device = backbone.training, next(backbone.parameters()).device
    backbone.eval()
    ds = SampleDataset(data, split, max_len, summary)
    parts: dict[str, list] = {name: [] for name in ("candidates", "logits", "target", "ranks", "states")}
    try:
        for s in range(0, len(ids), batch):
            b = {name: v.to(device) for name, v in to_tensors(ds.__getitems__(ids[s:s + batch].tolist())).items()}
            h = backbone.user_state(b)
            scores = backbone.score(h, b)
            top = scores.topk(k, -1)
            target = b["target"][:, -1]
            for name, value in zip(parts, (top.indices, top.values, target, ranks_from_scores(scores, target), h),
                                   strict=True):
                parts[name].append(value.float() if value.is_floating_point() else value)
    finally:
        backbone.train(training)
    return TopK(**{name: torch.cat(v).cpu().numpy() for name, v in parts.items()})


def fact_vector(f: CandidateFacts) -> list[float]:
    """The reader's features of one candidate (``FACTS``, then ``SCORE_FEATURES`` where its score is shown)."""
    fns = [*FACT_FEATURES.values(), *(SCORE_FEATURES.values() if f.share is not None else ())]
    return [float(fn(f)) for fn in fns]


def prompt_facts(data: CheckinData, split: str, ids: np.ndarray, candidates: np.ndarray, explainer_cfg,
                 logits: np.ndarray | None = None) -> np.ndarray:
    """float32 [n, K, len(fact_names(explainer_cfg))]: what the prompt states about each candidate (history
    before the sample only); ``logits`` [n, K]: the candidates' logits, which explainer.show_scores states."""
    out = np.zeros((*candidates.shape, len(fact_names(explainer_cfg))), dtype=np.float32)
    for i, (sample, row) in enumerate(zip(ids, candidates, strict=True)):
        ctx = context(data, split, int(sample), row, explainer_cfg, None if logits is None else logits[i])
        out[i] = [fact_vector(f) for f in candidate_facts(data, ctx)]
    return out


def features(facts: np.ndarray, logits: np.ndarray | None = None) -> torch.Tensor:
    """[n, K, F]: rank one-hot, with ``logits`` the logit minus the sample's top logit (a fact the prompt does
    not state), then the given facts."""
    n, k = facts.shape[:2]
    parts = [np.broadcast_to(np.eye(k, dtype=np.float32), (n, k, k))]
    if logits is not None:
        parts.append((logits - logits[:, :1])[..., None])
    return torch.from_numpy(np.concatenate([*parts, facts], -1).astype(np.float32))


def fit_reader(x: torch.Tensor, target_slot: torch.Tensor, ridge: float = 1e-4) -> torch.nn.Linear:
    """A linear score per candidate, softmax over the K, on the samples whose target is among them
    (``components.fusion.fit_listwise``; the bias, a constant per sample, stays 0)."""
    model = torch.nn.Linear(x.shape[-1], 1)
    with torch.no_grad():
        model.weight.copy_(fit_listwise(x, target_slot, ridge=ridge).view(1, -1))
        model.bias.zero_()
    return model


def reranked_ranks(model, x: torch.Tensor, slot: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Full-ranking ranks after re-ordering the top-K by the model's scores (``ranks_within``)."""
    with torch.no_grad():
        return ranks_within(model(x).squeeze(-1), slot, ranks)


def ranks_within(scores: torch.Tensor, slot: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Full-ranking ranks after re-ordering the top-K by scores [n, K] (the evaluator's rank and tie rule
    among the K; targets outside the K keep theirs)."""
    out = np.asarray(ranks, dtype=np.float64).copy()
    inside = slot >= 0
    out[inside] = ranks_from_scores(scores[torch.from_numpy(inside)], torch.from_numpy(slot[inside])).numpy()
    return out


def prompt_reader(val: TopK, val_facts: np.ndarray, logits: bool = False) -> torch.nn.Linear:
    """The facts reader fitted on the val samples whose target is among their candidates: rank and the
    prompt's facts (``logits``: also the logit margin, which the prompt does not state)."""
    inside = val.slot >= 0
    if not inside.any():
        raise ValueError("no val sample has its target among the candidates: nothing to fit the reader on")
    x = features(val_facts, val.logits if logits else None)
    return fit_reader(x[torch.from_numpy(inside)], torch.from_numpy(val.slot[inside]))


def reader_ranks(val: TopK, val_facts: np.ndarray, test: TopK, test_facts: np.ndarray, logits: bool = False
                 ) -> np.ndarray:
    """Test ranks of the re-ranker fitted on the val samples (``prompt_reader``)."""
    model = prompt_reader(val, val_facts, logits)
    return reranked_ranks(model, features(test_facts, test.logits if logits else None), test.slot, test.ranks)


def crossfit_ranks(x: torch.Tensor, slot: np.ndarray, ranks: np.ndarray, folds: int = 2, seed: int = 0
                   ) -> np.ndarray:
    """Full-ranking ranks of a linear re-ranker of the top-K scored on samples it was not fitted on: the
    samples split into seeded ``folds``, each re-ranked by the reader fitted on the others (for features
    that exist on one split only, e.g. the explanations of the test samples)."""
    fold = np.random.default_rng(seed).permutation(len(slot)) % folds
    out = np.asarray(ranks, dtype=np.float64).copy()
    for f in range(folds):
        fit = (fold != f) & (slot >= 0)
        model = fit_reader(x[torch.from_numpy(fit)], torch.from_numpy(slot[fit]))
        rows = torch.from_numpy(fold == f)
        out[fold == f] = reranked_ranks(model, x[rows], slot[fold == f], ranks[fold == f])
    return out


def facts_bound(backbone: Backbone, data: CheckinData, cfg, val_ids: np.ndarray, test_ids: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Test ranks of the backbone's order and of the facts reader (fitted on val; what the prompt states,
    nothing else: with explainer.show_scores the printed score too) over the top
    ``cfg.explainer.num_candidates``, for paired CIs."""
    views = {}
    for split, ids in (("val", val_ids), ("test", test_ids)):
        view = top_k(backbone, data, split, ids, cfg.explainer.num_candidates, cfg.data.max_len,
                     cfg.data.history_summary)
        views[split] = (view, prompt_facts(data, split, ids, view.candidates, cfg.explainer, view.logits))
    return {"backbone": views["test"][0].ranks, "reader": reader_ranks(*views["val"], *views["test"]),
            "val_fitted": int((views["val"][0].slot >= 0).sum())}


def relay_verdicts(order: np.ndarray, follow: np.ndarray) -> torch.Tensor:
    """z [n, K, 2] of an explainer that relays a teacher's order of the K (best first): where ``follow``,
    "may like" names the teacher's top-1, elsewhere the recommender's top-1; "may not like" names the
    teacher's lowest (unless "may like" names it)."""
    n, k = order.shape
    like, dislike = np.where(follow, order[:, 0], 0), order[:, -1]
    z = torch.zeros(n, k, 2)
    rows = np.arange(n)
    z[rows, like, 0] = 1.0
    other = dislike != like
    z[rows[other], dislike[other], 1] = 1.0
    return z


def relay_ranks(val: TopK, val_facts: np.ndarray, test: TopK, test_facts: np.ndarray, agree: float = 1.0,
                ridge: float = 1e-3, seed: int = 0, teacher_logits: bool = False) -> tuple[np.ndarray, float]:
    """What a reading explainer could carry: test ranks when its verdicts relay the prompt-only teacher
    (``prompt_reader``, fitted on val) on a seeded share ``agree`` of the samples (``relay_verdicts``) and
    the verdict fusion (components.fusion.VerdictReranker, fitted in closed form on the val samples' relayed
    verdicts) re-ranks the top-K; and the fusion's fitted liked-minus-unnamed value in logits.
    ``teacher_logits``: the teacher also reads the logit margin, i.e. what a prompt stating the recommender's
    score per candidate would let a reader see."""
    teacher = prompt_reader(val, val_facts, teacher_logits)
    rng = np.random.default_rng(seed)

    def verdicts(view: TopK, facts: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            scores = teacher(features(facts, view.logits if teacher_logits else None)).squeeze(-1).numpy()
        return relay_verdicts(np.argsort(-scores, 1, kind="stable"), rng.random(len(scores)) < agree)

    fusion = VerdictReranker(val.logits.shape[1])
    n = len(val.slot)
    fusion.fit_explained(torch.from_numpy(val.logits), verdicts(val, val_facts), torch.ones(n, dtype=torch.bool),
                         torch.from_numpy(val.slot), torch.arange(n), ridge)
    logits = torch.from_numpy(test.logits)
    cand = torch.arange(logits.shape[1]).expand_as(logits)
    with torch.no_grad():
        scores, _ = fusion(logits, cand, verdicts(test, test_facts), torch.ones_like(cand, dtype=torch.bool))
    return ranks_within(scores, test.slot, test.ranks), fusion.liked_bonus().item()
