"""Does the explanation prompt tell anything about the next POI that the recommender's ranking does not?

The explainer reads a prompt (recent history, the time, the recommender's top-K with distance, visit
count and usual part of the day); a verdict that re-ranks the top-K can only help if that text carries
information beyond the ranking. This fits a linear re-ranker of the top-K on the *val* samples (whose
targets the backbone never trained on) from (a) the rank and the backbone's logit alone, (b) those plus
the prompt's per-candidate facts, and scores it on the test samples against the backbone's own order.
If (b) does not beat (a), no reader of this prompt, an LLM included, can add accuracy through a verdict
unless it brings knowledge the prompt does not state (e.g. what a category's name implies). With
``--llm`` a third re-ranker also reads the explainer's log-likelihood of "may like: <candidate>" after the
prompt: whatever the LLM knows beyond the stated facts (``--explainer-ckpt``: the LoRA and soft prompt of
a trained `recpie` checkpoint, e.g. after the hindsight warm-up; default: the base model).

    python benchmarks/prompt_information.py --backbone results/nyc_baselines/.../best-*.ckpt
    python benchmarks/prompt_information.py --backbone B.ckpt --llm --n 300 [--explainer-ckpt last.ckpt]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.load import load_checkin_data
from recpie.data.types import SECONDS_PER_HOUR
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.explainer.explainer import Explainer
from recpie.explainer.prompts import build_prompt, context, part_of_day, usual_time, visits
from recpie.explainer.soft_prompt import build_inputs
from recpie.models.recpie_module import subset_ids

FACTS = ["log1p visits", "usual part of day is now's", "log1p km from the last place", "log1p same-category visits",
         "visited at all"]


def top_k(backbone: Backbone, data, split: str, ids: np.ndarray, k: int, max_len: int, summary: bool
          ) -> tuple[np.ndarray, ...]:
    """(candidates [n,K], their logits [n,K], target POI [n], 1-based rank of the target over all POIs [n],
    user states [n,d]) of samples ``ids``."""
    ds = SampleDataset(data, split, max_len, summary)
    cands, logits, targets, ranks, states = [], [], [], [], []
    with torch.no_grad():
        for s in range(0, len(ids), 256):
            b = to_tensors(ds.__getitems__(ids[s:s + 256].tolist()))
            h = backbone.user_state(b)
            scores = backbone.score(h, b)
            top = scores.topk(k, -1)
            t = b["target"][:, -1]
            cands.append(top.indices), logits.append(top.values), targets.append(t), states.append(h)
            ranks.append((scores > scores.gather(1, t[:, None])).sum(1) + 1)
    return tuple(torch.cat(x).numpy() for x in (cands, logits, targets, ranks, states))


@torch.no_grad()
def llm_label_logprobs(explainer: Explainer, prompts: list[str], labels: list[list[str]],
                       states: np.ndarray | None, batch: int = 8) -> np.ndarray:
    """[n, K] log p(" <label>" | prompt ending in 'may like:'), summed over the label's tokens: one prefill
    per prompt, its KV cache repeated for the K continuations. ``states``: the user states a trained soft
    prompt reads (None: no soft prompt)."""
    model, tok, k = explainer.model, explainer.tokenizer, len(labels[0])
    out = np.zeros((len(prompts), k), dtype=np.float32)
    model.eval()
    for s in tqdm(range(0, len(prompts), batch), desc="LLM log p(label), prompt batches"):
        enc = tok(prompts[s:s + batch], return_tensors="pt", padding=True).to(explainer.device)
        b = enc.input_ids.shape[0]
        soft = explainer.soft(torch.from_numpy(states[s:s + batch])) if states is not None else None
        embeds, mask, pos = build_inputs(model, enc.input_ids, enc.attention_mask, soft)
        pre = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = pre.past_key_values
        cache.batch_repeat_interleave(k)
        conts = [tok(" " + lab, add_special_tokens=False).input_ids for row in labels[s:s + batch] for lab in row]
        width = max(map(len, conts))
        ids = torch.full((b * k, width), tok.pad_token_id, dtype=torch.long)
        cmask = torch.zeros_like(ids)
        for r, c in enumerate(conts):
            ids[r, :len(c)], cmask[r, :len(c)] = torch.tensor(c), 1
        ids, cmask = ids.to(explainer.device), cmask.to(explainer.device)
        cpos = pos[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(width, device=ids.device)
        cont = model(input_ids=ids, attention_mask=torch.cat([mask.repeat_interleave(k, 0), cmask], 1),
                     position_ids=cpos, past_key_values=cache)
        first = pre.logits[:, -1].float().log_softmax(-1).repeat_interleave(k, 0).gather(1, ids[:, :1])
        rest = cont.logits[:, :-1].float().log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(-1)
        out[s:s + b] = (torch.cat([first, rest], 1) * cmask).sum(1).view(b, k).cpu().numpy()
    return out


def prompt_facts(data, split: str, ids: np.ndarray, cands: np.ndarray, cfg) -> np.ndarray:
    """[n, K, len(FACTS)]: what the prompt states about each candidate (history before the sample only)."""
    out = np.zeros((*cands.shape, len(FACTS)), dtype=np.float32)
    for i, (sample, row) in enumerate(zip(ids, cands, strict=True)):
        ctx = context(data, split, int(sample), row, cfg)
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


def explainer_from(cfg, user_dim: int, checkpoint: str | None, data) -> Explainer:
    """The explainer of ``cfg``, with the LoRA + soft prompt of a `recpie` checkpoint if given."""
    explainer = Explainer(cfg.explainer, user_dim, data)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        mine = {k.removeprefix("explainer."): v for k, v in state.items() if k.startswith("explainer.")}
        result = explainer.load_state_dict(mine, strict=False)  # the checkpoint holds no frozen base weights
        if result.unexpected_keys or not mine:
            raise ValueError(f"{checkpoint} does not fit explainer {cfg.explainer.model} as configured: "
                             f"{result.unexpected_keys[:3] or 'no explainer weights'}")
    return explainer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", required=True, help="a nyc_baselines backbone checkpoint (.ckpt)")
    ap.add_argument("--config", default="nyc_recpie")
    ap.add_argument("--k", type=int, default=5, help="candidates shown (explainer.num_candidates)")
    ap.add_argument("--n", type=int, default=0, help="val and test samples each (a seeded subset; 0 = all)")
    ap.add_argument("--llm", action="store_true", help="also re-rank with the explainer's log p(label)")
    ap.add_argument("--explainer-ckpt", help="a recpie checkpoint whose LoRA + soft prompt to load")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. explainer.history_len=5")
    args = ap.parse_args(argv)
    cfg = load_experiment(args.config, [f"explainer.num_candidates={args.k}", "explainer.quantization=none",
                                        *args.overrides])
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    state = torch.load(args.backbone, map_location="cpu", weights_only=False)["state_dict"]
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    backbone.eval()
    explainer = explainer_from(cfg, backbone.hidden_size, args.explainer_ckpt, data) if args.llm else None
    split = {}
    for name in ("val", "test"):
        ids = subset_ids(len(data.splits[name]), args.n, cfg.recpie.subset_seed).numpy()
        cands, logits, target, ranks, states = top_k(backbone, data, name, ids, args.k, cfg.data.max_len,
                                                     cfg.data.history_summary)
        hit = cands == target[:, None]
        facts = prompt_facts(data, name, ids, cands, cfg.explainer)
        if explainer is not None:
            prompts = [build_prompt(data, name, int(i), c, cfg.explainer) for i, c in zip(ids, cands, strict=True)]
            labels = [[data.catalogue.label(int(p)) for p in c] for c in cands]
            llm = llm_label_logprobs(explainer, prompts, labels, states if args.explainer_ckpt else None)
            facts = np.concatenate([facts, (llm - llm.max(1, keepdims=True))[..., None]], -1)
        split[name] = dict(logits=logits, facts=facts, slot=np.where(hit.any(1), hit.argmax(1), -1), ranks=ranks)
    readers = {"re-ranked: rank + logit": 0, "re-ranked: rank + logit + prompt facts": len(FACTS)}
    if explainer is not None:
        readers["re-ranked: rank + logit + prompt facts + LLM log p(label)"] = len(FACTS) + 1
    test, e = split["test"], cfg.eval
    rows = {"backbone order": test["ranks"]}
    for label, width in readers.items():
        val = split["val"]
        inside = val["slot"] >= 0
        model = fit(features(val["logits"], val["facts"][..., :width])[inside], torch.from_numpy(val["slot"][inside]))
        rows[label] = reranked_ranks(model, features(test["logits"], test["facts"][..., :width]), test["slot"],
                                     test["ranks"])
    inside = test["slot"] >= 0
    print(f"{args.config}: fitted on {int((split['val']['slot'] >= 0).sum())} val samples with the target in the "
          f"top {args.k}; scored on {len(inside)} test samples ({int(inside.sum())} with the target in the top "
          f"{args.k}); prompt facts: {', '.join(FACTS)}\n")
    print(f"| ranking | Acc@1 | MRR | top-1 is the target, when it is in the top {args.k} | MRR minus backbone order |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        ci = paired_bootstrap_ci(r, test["ranks"], "mrr", e.bootstrap_samples, e.bootstrap_level,
                                 e.bootstrap_seed) if label != "backbone order" else None
        delta = f"{ci.diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]" if ci else "-"
        print(f"| {label} | {np.mean(r == 1):.4f} | {np.mean(1.0 / r):.4f} | {np.mean(r[inside] == 1):.4f} | {delta} |")
    if explainer is not None:
        facts, llm = (rows[k] for k in list(readers)[1:])
        ci = paired_bootstrap_ci(llm, facts, "mrr", e.bootstrap_samples, e.bootstrap_level, e.bootstrap_seed)
        print(f"\nWhat the LLM adds to the prompt facts: MRR {ci.diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]")


if __name__ == "__main__":
    main()
