"""Does the explanation prompt tell anything about the next POI that the recommender's ranking does not?

The explainer reads a prompt (recent history, the time, the recommender's top-K with distance, visit
count and usual part of the day); a verdict that re-ranks the top-K can only help if that text carries
information beyond the ranking. This fits a linear re-ranker of the top-K on the *val* samples (whose
targets the backbone never trained on) from (a) the rank and the backbone's logit alone, (b) those plus
the prompt's per-candidate facts, and scores it on the test samples against the backbone's own order.
If (b) does not beat (a), no reader of this prompt, an LLM included, can add accuracy through a verdict
unless it brings knowledge the prompt does not state (e.g. what a category's name implies).

    python benchmarks/prompt_information.py --backbone results/nyc_baselines/.../best-*.ckpt
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.load import load_checkin_data
from recpie.data.types import SECONDS_PER_HOUR
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.explainer.prompts import context, part_of_day, usual_time, visits

FACTS = ["log1p visits", "usual part of day is now's", "log1p km from the last place", "log1p same-category visits",
         "visited at all"]


def top_k(backbone: Backbone, data, split: str, k: int, max_len: int, summary: bool) -> tuple[np.ndarray, ...]:
    """(candidates [n,K], their logits [n,K], target POI [n], 1-based rank of the target over all POIs [n])."""
    ds = SampleDataset(data, split, max_len, summary)
    cands, logits, targets, ranks = [], [], [], []
    with torch.no_grad():
        for s in range(0, len(ds), 256):
            b = to_tensors(ds.__getitems__(list(range(s, min(s + 256, len(ds))))))
            scores = backbone.score(backbone.user_state(b), b)
            top = scores.topk(k, -1)
            t = b["target"][:, -1]
            cands.append(top.indices), logits.append(top.values), targets.append(t)
            ranks.append((scores > scores.gather(1, t[:, None])).sum(1) + 1)
    return tuple(torch.cat(x).numpy() for x in (cands, logits, targets, ranks))


def prompt_facts(data, split: str, cands: np.ndarray, cfg) -> np.ndarray:
    """[n, K, len(FACTS)]: what the prompt states about each candidate (history before the sample only)."""
    out = np.zeros((*cands.shape, len(FACTS)), dtype=np.float32)
    for i, row in enumerate(cands):
        ctx = context(data, split, i, row, cfg)
        now = part_of_day(int(ctx.now_local // SECONDS_PER_HOUR % 24))
        hist_cats = data.catalogue.category[data.poi[ctx.history]]
        for j, p in enumerate(row):
            seen = visits(data, ctx, int(p))
            out[i, j] = [np.log1p(len(seen)), float(len(seen) > 0 and usual_time(data, seen) == now),
                         np.log1p(ctx.distance_km[j]), np.log1p((hist_cats == data.catalogue.category[p]).sum()),
                         float(len(seen) > 0)]
    return out


def features(logits: np.ndarray, facts: np.ndarray | None) -> torch.Tensor:
    """[n, K, F]: rank one-hot and the logit minus the sample's top logit, then the prompt's facts."""
    n, k = logits.shape
    parts = [np.broadcast_to(np.eye(k, dtype=np.float32), (n, k, k)), (logits - logits[:, :1])[..., None]]
    if facts is not None:
        parts.append(facts)
    return torch.from_numpy(np.concatenate(parts, -1).astype(np.float32))


def fit(x: torch.Tensor, target_slot: torch.Tensor, steps: int = 300) -> torch.nn.Linear:
    """A linear score per candidate, softmax over the K, on the samples whose target is among them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[-1], 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).squeeze(-1), target_slot) + 1e-4 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def reranked_ranks(model, x, slot: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Full-ranking ranks after re-ordering the top-K by the model (targets outside the K keep theirs)."""
    with torch.no_grad():
        order = model(x).squeeze(-1).argsort(-1, descending=True).numpy()
    out = ranks.copy()
    inside = slot >= 0
    out[inside] = 1 + np.argmax(order[inside] == slot[inside, None], axis=1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", required=True, help="a nyc_baselines backbone checkpoint (.ckpt)")
    ap.add_argument("--config", default="nyc_recpie")
    ap.add_argument("--k", type=int, default=5, help="candidates shown (explainer.num_candidates)")
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config, [f"explainer.num_candidates={args.k}"])
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    state = torch.load(args.backbone, map_location="cpu", weights_only=False)["state_dict"]
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    backbone.eval()
    split = {}
    for name in ("val", "test"):
        cands, logits, target, ranks = top_k(backbone, data, name, args.k, cfg.data.max_len, cfg.data.history_summary)
        hit = cands == target[:, None]
        slot = np.where(hit.any(1), hit.argmax(1), -1)
        split[name] = dict(logits=logits, facts=prompt_facts(data, name, cands, cfg.explainer), slot=slot, ranks=ranks)
    e = cfg.eval
    test = split["test"]
    rows = {"backbone order": test["ranks"]}
    for label, use_facts in (("re-ranked: rank + logit", False), ("re-ranked: rank + logit + prompt facts", True)):
        val = split["val"]
        x = features(val["logits"], val["facts"] if use_facts else None)
        inside = val["slot"] >= 0
        model = fit(x[inside], torch.from_numpy(val["slot"][inside]))
        rows[label] = reranked_ranks(model, features(test["logits"], test["facts"] if use_facts else None),
                                     test["slot"], test["ranks"])
    inside = test["slot"] >= 0
    print(f"{args.config}: fitted on {int((split['val']['slot'] >= 0).sum())} val samples with the target in the "
          f"top {args.k}; scored on all {len(inside)} test samples ({int(inside.sum())} with the target in the top "
          f"{args.k}); prompt facts: {', '.join(FACTS)}\n")
    print(f"| ranking | Acc@1 | MRR | top-1 is the target, when it is in the top {args.k} | MRR minus backbone order |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        ci = paired_bootstrap_ci(r, test["ranks"], "mrr", e.bootstrap_samples, e.bootstrap_level,
                                 e.bootstrap_seed) if label != "backbone order" else None
        delta = f"{ci.diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]" if ci else "-"
        print(f"| {label} | {np.mean(r == 1):.4f} | {np.mean(1.0 / r):.4f} | {np.mean(r[inside] == 1):.4f} | {delta} |")


if __name__ == "__main__":
    main()
