"""Would a readout explainer's verdicts pay if it departed from candidate 1 only when sure? (issue 22)

The gate on the readout runs at 3% (`verdict_information.py`, "where a verdict can pay") splits the
departures of "may like" from the recommender's first candidate: those that name the facts teacher's top-1
name the target more often than candidate 1 would on the same samples, the others less often. Both kinds
come from one argmax over the readout's pi. This reads a finished readout run's pi (its best checkpoint:
recommender, LoRA, soft prompt, head) on seeded val samples and on the test samples, and for each margin
tau lets "may like" leave candidate 1 only where log pi(best) - log pi(candidate 1) > tau (tau 0: the run's
argmax; "may not like" stays pi's least likely candidate of another name: ``explainer.depart_margin``). Per tau:
how many departures, their precision against candidate 1 split by the teacher (``departure_precision``),
and what the verdicts add to the recommender's order under a linear re-ranker of rank + logit + verdict
(``information.fit_reader``, the same reader as the gate): cross-fitted within each split, and fitted on
the val samples then scored on test (a fusion fitted on val, as the runs' ``recpie.fusion_fit_split=val``).
The margin is chosen by the val gain; the test columns of the other margins are shown, not chosen on.

pi is read once per split and kept in ``--cache`` (an .npz of arrays, no pickles; keyed by the run's
checkpoint file, its size and time): a second call with other margins reads nothing again.

    python benchmarks/departure_margin.py results/nyc_recpie_3pct_readout [--val 1024] [--test 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from readout_probe import read_states  # benchmarks/ is the script's own folder on sys.path

from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.tables import ci_text, markdown_table
from recpie.evaluation.verdicts import departure_precision
from recpie.explainer.choice import choice_positions
from recpie.explainer.information import crossfit_ranks, features, fit_reader, reranked_ranks, top_k
from recpie.explainer.warmup import FactsTeacher
from recpie.recipes.trained_run import best_checkpoint, load_trained_run


def read_pi(module, data, teacher: FactsTeacher, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """log pi [n, K], the candidates' label ids [n, K] (equal ids: the same name), the candidates and the
    teacher's top-1 position, with the run's recommender's top K, for ``ids`` of ``split``
    (``readout_probe.read_states``, its line-end states dropped)."""
    _, logp, order, candidates, labels = read_states(module, data, teacher, split, ids)
    return {"logp": logp.float().numpy(), "names": np.array([[row.index(x) for x in row] for row in labels]),
            "candidates": candidates.numpy(), "teacher_top": order[:, 0].numpy(), "ids": ids}


def verdicts(logp: np.ndarray, names: np.ndarray, margin: float) -> np.ndarray:
    """z [n, K, 2] of the greedy choice at ``margin`` (``choice.choice_positions``, explainer.depart_margin):
    "may like" pi's best candidate where it beats candidate 1 by more than the margin in log pi, else
    candidate 1; "may not like" the least likely candidate of another name."""
    like, dislike = choice_positions(torch.from_numpy(logp), names.tolist(), margin)
    z = np.zeros((*logp.shape, 2), np.float32)
    rows = np.arange(len(logp))
    z[rows, like, 0] = 1.0
    other = np.asarray(dislike) != np.asarray(like)
    z[rows[other], np.asarray(dislike)[other], 1] = 1.0
    return z


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished recpie run folder with explainer.choice=readout")
    ap.add_argument("--seed", type=int, default=None, help="which of its seeds (default: its first)")
    ap.add_argument("--val", type=int, default=1024, help="seeded val samples (0 = all)")
    ap.add_argument("--test", type=int, default=0, help="seeded test samples (0 = all)")
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--cache", type=Path, default=None, help="where pi is kept (default: <run>/../<run name>_pi.npz)")
    args = ap.parse_args(argv)
    cfg, data, module = load_trained_run(args.run, args.seed)
    if module.explainer is None or module.explainer.choice_head is None:
        raise SystemExit(f"{args.run}: not a run with explainer.choice=readout (no pi to read)")
    seed = cfg.run.seeds[0] if args.seed is None else args.seed
    checkpoint = best_checkpoint(args.run, seed)
    key = f"{checkpoint.resolve()}|{checkpoint.stat().st_size}|{checkpoint.stat().st_mtime_ns}"
    cache = args.cache or args.run.parent / f"{args.run.name}_seed{seed}_pi.npz"
    draw = np.random.default_rng(seed)
    want = {}
    for split, n in (("val", args.val), ("test", args.test)):
        total = len(data.splits[split])
        want[split] = np.sort(draw.choice(total, n, replace=False)) if 0 < n < total else np.arange(total)
    read: dict[str, dict] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                for split in want:
                    got = {name[len(split) + 1:]: z[name] for name in z.files if name.startswith(split + "/")}
                    if got and np.array_equal(got["ids"], want[split]):
                        read[split] = got
    teacher = FactsTeacher.fit(module.recommender.backbone, data, cfg)
    for split in want:
        if split not in read:
            read[split] = read_pi(module, data, teacher, split, want[split])
    np.savez(cache, key=np.array(key), **{f"{s}/{name}": v for s, got in read.items() for name, v in got.items()})
    k = cfg.explainer.num_candidates
    views = {split: top_k(module.recommender.backbone, data, split, read[split]["ids"], k, cfg.data.max_len,
                          cfg.data.history_summary) for split in read}
    for split, view in views.items():
        same = (view.candidates == read[split]["candidates"]).all(1)
        if not same.all():
            print(f"{split}: {int((~same).sum())} samples whose pi was read over another top {k} (ties); kept")
    e = cfg.eval
    boot = dict(n_boot=e.bootstrap_samples, level=e.bootstrap_level, seed=e.bootstrap_seed)
    test, val = views["test"], views["val"]
    inside = torch.from_numpy(val.slot >= 0)

    def val_fitted(x: dict[str, torch.Tensor]) -> np.ndarray:  # test ranks of the reader fitted on val
        return reranked_ranks(fit_reader(x["val"][inside], torch.from_numpy(val.slot)[inside]), x["test"],
                              test.slot, test.ranks)

    plain = {s: features(np.zeros((len(v.ranks), k, 0), np.float32), v.logits) for s, v in views.items()}
    base = {s: crossfit_ranks(plain[s], v.slot, v.ranks) for s, v in views.items()}
    base_fitted = val_fitted(plain)
    rows, val_gain = [], {}
    for margin in args.margins:
        z = {s: verdicts(read[s]["logp"], read[s]["names"], margin) for s in read}
        x = {s: features(z[s], views[s].logits) for s in read}
        cross = {s: crossfit_ranks(x[s], views[s].slot, views[s].ranks) for s in read}
        fitted = val_fitted(x)
        val_gain[margin] = float(np.mean(1 / cross["val"]) - np.mean(1 / base["val"]))
        p = departure_precision(torch.as_tensor(z["test"][..., 0]), torch.as_tensor(read["test"]["candidates"]),
                                torch.as_tensor(test.target), torch.as_tensor(read["test"]["teacher_top"]))
        good, bad = p["explainer departs, with the teacher"], p["explainer departs, not with the teacher"]
        rows.append([f"{margin:g}", f"{(z['val'][:, 1:, 0].sum(1) > 0).mean():.3f}", f"{val_gain[margin]:+.4f}",
                     f"{(z['test'][:, 1:, 0].sum(1) > 0).mean():.3f}",
                     f"{good['samples']}: {good['named']:.3f} / {good['first']:.3f}",
                     f"{bad['samples']}: {bad['named']:.3f} / {bad['first']:.3f}",
                     ci_text(paired_bootstrap_ci(cross["test"], base["test"], "mrr", **boot)),
                     ci_text(paired_bootstrap_ci(fitted, base_fitted, "mrr", **boot))])
    chosen = max(val_gain, key=val_gain.get)
    teacher_p = departure_precision(torch.zeros(len(test.ranks), k), torch.as_tensor(read["test"]["candidates"]),
                                    torch.as_tensor(test.target), torch.as_tensor(read["test"]["teacher_top"]))
    t = teacher_p["teacher departs (its top-1)"]
    print(f"\n{args.run} seed {seed}: {len(val.ranks)} val / {len(test.ranks)} test samples; the teacher departs "
          f"from candidate 1 on {t['samples']} test samples, naming the target on {t['named']:.3f} of them against "
          f"candidate 1's {t['first']:.3f}. MRR gains are over rank + logit alone (the same reader without "
          f"verdicts); the margin with the best val gain: {chosen:g}\n")
    print(markdown_table(["margin (log pi)", "val: departures", "val: gain, cross-fitted", "test: departures",
                          "test: with the teacher, n: target named / candidate 1",
                          "test: not with the teacher, n: named / candidate 1", "test: gain, cross-fitted",
                          "test: gain, reader fitted on val"], rows))


if __name__ == "__main__":
    main()
