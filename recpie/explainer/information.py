"""How much could any reader of the explainer's prompt add to the recommender's order? (the information bound)

The explainer reads a prompt that states, per top-K candidate, the user's visit count, the usual part of
the day, the distance from the last place and same-category visits. A verdict that re-ranks the top-K can
only help if those facts carry information beyond the ranking. ``facts_bound`` fits a linear re-ranker of
the top-K from the rank, the backbone's logit and those facts on the *val* samples (targets no backbone
trained on) and scores it on the test samples against the backbone's own order. Before any expensive
explainer run, this says how much room there is. benchmarks/prompt_information.py adds the LLM's own
log-likelihood of each candidate as a further feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.data.types import SECONDS_PER_HOUR, CheckinData
from recpie.evaluation.ranking import ranks_from_scores
from recpie.explainer.prompts import context, part_of_day, usual_time, visits

# what the facts of a prompt are; bump it when they change, so saved bounds are recomputed (2: a tie in
# a place's usual part of the day goes to its most recent visit, no longer to a per-process set order)
FACTS_VERSION = 2
FACTS = ["log1p visits", "usual part of day is now's", "log1p km from the last place",
         "log1p same-category visits", "visited at all"]


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
    """The backbone's top-K, logits, full ranks and user states for samples ``ids`` of ``split``."""
    backbone.eval()
    ds = SampleDataset(data, split, max_len, summary)
    parts: dict[str, list] = {name: [] for name in ("candidates", "logits", "target", "ranks", "states")}
    for s in range(0, len(ids), batch):
        b = to_tensors(ds.__getitems__(ids[s:s + batch].tolist()))
        h = backbone.user_state(b)
        scores = backbone.score(h, b)
        top = scores.topk(k, -1)
        target = b["target"][:, -1]
        for name, value in zip(parts, (top.indices, top.values, target, ranks_from_scores(scores, target), h),
                               strict=True):
            parts[name].append(value)
    return TopK(**{name: torch.cat(v).numpy() for name, v in parts.items()})


def prompt_facts(data: CheckinData, split: str, ids: np.ndarray, candidates: np.ndarray, explainer_cfg
                 ) -> np.ndarray:
    """float32 [n, K, len(FACTS)]: what the prompt states about each candidate (history before the sample only)."""
    out = np.zeros((*candidates.shape, len(FACTS)), dtype=np.float32)
    for i, (sample, row) in enumerate(zip(ids, candidates, strict=True)):
        ctx = context(data, split, int(sample), row, explainer_cfg)
        now = part_of_day(int(ctx.now_local // SECONDS_PER_HOUR % 24))
        hist_cats = data.catalogue.category[data.poi[ctx.history]]
        for j, p in enumerate(row):
            seen = visits(data, ctx, int(p))
            out[i, j] = [np.log1p(len(seen)), float(len(seen) > 0 and usual_time(data, seen) == now),
                         np.log1p(ctx.distance_km[j]), np.log1p((hist_cats == data.catalogue.category[p]).sum()),
                         float(len(seen) > 0)]
    return out


def features(logits: np.ndarray, facts: np.ndarray) -> torch.Tensor:
    """[n, K, F]: rank one-hot and the logit minus the sample's top logit, then the given facts."""
    n, k = logits.shape
    parts = [np.broadcast_to(np.eye(k, dtype=np.float32), (n, k, k)), (logits - logits[:, :1])[..., None], facts]
    return torch.from_numpy(np.concatenate(parts, -1).astype(np.float32))


def fit_reader(x: torch.Tensor, target_slot: torch.Tensor, steps: int = 300) -> torch.nn.Linear:
    """A linear score per candidate, softmax over the K, on the samples whose target is among them."""
    with torch.random.fork_rng():  # a fixed init that leaves the caller's random stream alone
        torch.manual_seed(0)
        model = torch.nn.Linear(x.shape[-1], 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(model(x).squeeze(-1), target_slot)
                + 1e-4 * model.weight.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    return model


def reranked_ranks(model, x: torch.Tensor, slot: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Full-ranking ranks after re-ordering the top-K by the model's scores (the evaluator's rank and tie
    rule among the K; targets outside the K keep theirs)."""
    with torch.no_grad():
        scores = model(x).squeeze(-1)
    out = np.asarray(ranks, dtype=np.float64).copy()
    inside = slot >= 0
    out[inside] = ranks_from_scores(scores[torch.from_numpy(inside)], torch.from_numpy(slot[inside])).numpy()
    return out


def reader_ranks(val: TopK, val_facts: np.ndarray, test: TopK, test_facts: np.ndarray) -> np.ndarray:
    """Test ranks of the re-ranker fitted on the val samples whose target is among their candidates."""
    inside = val.slot >= 0
    if not inside.any():
        raise ValueError("no val sample has its target among the candidates: nothing to fit the reader on")
    model = fit_reader(features(val.logits, val_facts)[inside], torch.from_numpy(val.slot[inside]))
    return reranked_ranks(model, features(test.logits, test_facts), test.slot, test.ranks)


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
    """Test ranks of the backbone's order and of the facts reader (fitted on val) over the top
    ``cfg.explainer.num_candidates``, for paired CIs."""
    views = {}
    for split, ids in (("val", val_ids), ("test", test_ids)):
        view = top_k(backbone, data, split, ids, cfg.explainer.num_candidates, cfg.data.max_len,
                     cfg.data.history_summary)
        views[split] = (view, prompt_facts(data, split, ids, view.candidates, cfg.explainer))
    return {"backbone": views["test"][0].ranks, "reader": reader_ranks(*views["val"], *views["test"]),
            "val_fitted": int((views["val"][0].slot >= 0).sum())}
