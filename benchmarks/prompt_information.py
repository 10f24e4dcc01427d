"""Does the explanation prompt tell anything about the next POI that the recommender's ranking does not?

The explainer reads a prompt (recent history, the time, the recommender's top-K with distance, visit
count and usual part of the day); a verdict that re-ranks the top-K can only help if that text carries
information beyond the ranking. This fits a linear re-ranker of the top-K on the *val* samples (whose
targets the backbone never trained on) from (a) the rank and the backbone's logit alone, (b) the rank and
the prompt's per-candidate facts (the information bound: what the prompt states, nothing else), (c) the
rank, the logit and the facts, and scores it on the test samples against the backbone's own order.
If (c) does not beat (a), no reader of this prompt, an LLM included, can add accuracy through a verdict
unless it brings knowledge the prompt does not state (e.g. what a category's name implies). With
``--llm`` a fourth re-ranker also reads the explainer's log-likelihood of "may like: <candidate>," after the
prompt: whatever the LLM knows beyond the stated facts (``--explainer-ckpt``: the LoRA and soft prompt of
a trained `recpie` checkpoint, e.g. after the hindsight warm-up; default: the base model). The relay rows
are what a reading explainer could carry (issue 22): its "may like" names the prompt-only teacher's top-1
(the bound's reader) on 100/90/70/50% of the samples (else the recommender's top-1), "may not like" the
teacher's lowest, read by the verdict fusion fitted in closed form on the val samples. With
``explainer.show_scores=true`` the prompt also states each candidate's share of the recommender's
probability among the K, and every "prompt facts" reader (the bound, the relayed teacher) reads it as printed.

    python benchmarks/prompt_information.py --backbone results/nyc_baselines/.../best-*.ckpt
    python benchmarks/prompt_information.py --backbone B.ckpt --llm --n 300 [--explainer-ckpt last.ckpt]
    python benchmarks/prompt_information.py --backbone B.ckpt data.train_fraction=0.03 explainer.show_scores=true
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.fraction import supervision_draw
from recpie.data.load import load_checkin_data
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.tables import ci_text
from recpie.explainer.explainer import Explainer
from recpie.explainer.information import fact_names, prompt_facts, reader_ranks, relay_ranks, top_k
from recpie.explainer.prompts import build_prompt
from recpie.utils.checkpoints import load_weights
from recpie.utils.seeds import subset_ids


def explainer_from(cfg, user_dim: int, checkpoint: str | None, data) -> Explainer:
    """The explainer of ``cfg``, with the LoRA + soft prompt of a `recpie` checkpoint if given."""
    explainer = Explainer(cfg.explainer, user_dim, data)
    if checkpoint:
        mine = load_weights(checkpoint, "--explainer-ckpt", "explainer.")
        result = explainer.load_state_dict(mine, strict=False)  # the checkpoint holds no frozen base weights
        if result.unexpected_keys:
            raise ValueError(f"{checkpoint} does not fit explainer {cfg.explainer.model} as configured: "
                             f"{result.unexpected_keys[:3]}")
    return explainer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", required=True, help="a nyc_baselines backbone checkpoint (.ckpt); one of a "
                    "data-efficiency study needs its data.train_fraction=F as an override (checked)")
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
    # a backbone fitted on a share of the train targets needs the same data.train_fraction (its prior)
    backbone.load_state_dict(load_weights(args.backbone, "--backbone", "backbone.", draw=supervision_draw(data)))
    backbone.eval()
    explainer = explainer_from(cfg, backbone.hidden_size, args.explainer_ckpt, data) if args.llm else None
    split = {}
    for name in ("val", "test"):
        ids = subset_ids(len(data.splits[name]), args.n, cfg.recpie.subset_seed).numpy()
        view = top_k(backbone, data, name, ids, args.k, cfg.data.max_len, cfg.data.history_summary)
        facts = prompt_facts(data, name, ids, view.candidates, cfg.explainer, view.logits)
        if explainer is not None:
            prompts = [build_prompt(data, name, int(i), c, cfg.explainer, logits=z)
                       for i, c, z in zip(ids, view.candidates, view.logits, strict=True)]
            labels = [[data.catalogue.label(int(p)) for p in c] for c in view.candidates]
            states = torch.from_numpy(view.states) if args.explainer_ckpt else None
            llm = np.concatenate([  # log pi, explainer.choice=scored's, 64 prompts at a time
                explainer.choice_logprobs(prompts[s:s + 64], labels[s:s + 64], None if states is None else
                                          states[s:s + 64]).numpy()
                for s in tqdm(range(0, len(prompts), 64), desc=f"LLM log p(label), {name} prompts / 64")])
            facts = np.concatenate([facts, (llm - llm.max(1, keepdims=True))[..., None]], -1)
        split[name] = (view, facts)
    # (facts read, logit margin read): the bound reads the prompt alone (rank + prompt facts)
    names = fact_names(cfg.explainer)  # with explainer.show_scores: the printed score too
    width = len(names)
    readers = {"re-ranked: rank + logit": (0, True), "re-ranked: rank + prompt facts (the bound)": (width, False),
               "re-ranked: rank + logit + prompt facts": (width, True)}
    if explainer is not None:
        readers["re-ranked: rank + logit + prompt facts + LLM log p(label)"] = (width + 1, True)
    (val, val_facts), (test, test_facts) = split["val"], split["test"]
    e = cfg.eval
    rows = {"backbone order": test.ranks}
    for label, (read, logits) in readers.items():
        rows[label] = reader_ranks(val, val_facts[..., :read], test, test_facts[..., :read], logits)
    bonus = {}  # what an explainer relaying the prompt-only teacher could carry through the fitted verdict fusion
    for agree in (1.0, 0.9, 0.7, 0.5):
        label = f"relay of the teacher's top-1 / lowest, {agree:.0%} agreement (verdict fusion fitted on val)"
        rows[label], bonus[agree] = relay_ranks(val, val_facts[..., :width], test, test_facts[..., :width], agree)
    label = "relay of a teacher that also reads the logit margin (a prompt stating the score), 100% agreement"
    rows[label], bonus["score-reading teacher"] = relay_ranks(val, val_facts[..., :width], test,
                                                              test_facts[..., :width], teacher_logits=True)
    inside = test.slot >= 0
    print(f"{args.config}: fitted on {int((val.slot >= 0).sum())} val samples with the target in the "
          f"top {args.k}; scored on {len(inside)} test samples ({int(inside.sum())} with the target in the top "
          f"{args.k}); prompt facts: {', '.join(names)}\n")
    print(f"| ranking | Acc@1 | MRR | top-1 is the target, when it is in the top {args.k} | MRR minus backbone order |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        ci = paired_bootstrap_ci(r, test.ranks, "mrr", e.bootstrap_samples, e.bootstrap_level,
                                 e.bootstrap_seed) if label != "backbone order" else None
        delta = ci_text(ci) if ci else "-"
        print(f"| {label} | {np.mean(r == 1):.4f} | {np.mean(1.0 / r):.4f} | {np.mean(r[inside] == 1):.4f} | {delta} |")
    print("\nThe relay's fitted fusion, liked minus unnamed (logits): "
          + ", ".join(f"{a:.0%} agreement {b:+.3f}" if isinstance(a, float) else f"{a} {b:+.3f}"
                    for a, b in bonus.items()))
    if explainer is not None:
        facts, llm = (rows[k] for k in list(readers)[2:])
        ci = paired_bootstrap_ci(llm, facts, "mrr", e.bootstrap_samples, e.bootstrap_level, e.bootstrap_seed)
        print(f"\nWhat the LLM adds to the prompt facts: MRR {ci_text(ci)}")


if __name__ == "__main__":
    main()
