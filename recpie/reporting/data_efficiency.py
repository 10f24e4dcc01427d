"""results.md of the data-efficiency study, from its results dict alone (``results.json`` with its CIs)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omegaconf import DictConfig

from recpie.evaluation.tables import ci_text
from recpie.reporting.plots import data_efficiency_plot
from recpie.utils.files import write_or_explain

METRICS = ("acc@1", "acc@10", "mrr")


def report(cfg: DictConfig, results: dict) -> str:
    """results.md: the curve's table, the bound per fraction, the lines and the cost. The last training-free
    line is the time-aware counter the backbone is compared with."""
    n, timed = results["samples"], list(results["lines"])[-1]
    md = [f"# {cfg.name}: data efficiency\n", cfg.description, "",
          f"Protocol: {cfg.data.source}, full ranking over all POIs, {n['val']} val and {n['test']} test "
          f"samples (untouched at every fraction). A fraction f keeps a seeded share of the supervised train "
          f"targets (unit: {results['unit']}, draw seed {results['draw_seed']}; nested across fractions); the "
          "backbone and Markov learn from the kept targets only, every check-in stays in the histories and "
          "prompts. The counters are training-free: the same at every fraction. Backbone: mean +- std over "
          "the seeds; CIs: 95% bootstrap over test samples of the seed-mean per-sample metric.", "",
          "| fraction | train steps kept | seeds | backbone Acc@1 | backbone Acc@10 | backbone MRR | Markov MRR | "
          f"backbone minus {timed}, MRR |", "|---|---|---|---|---|---|---|---|"]
    for r in results["fractions"]:
        b, k = r["backbone"], r["kept"]
        md.append(f"| {r['fraction']:g} | {k['train_steps_kept']:,} of {k['train_steps']:,} | {len(r['seeds'])} | "
                  + " | ".join(f"{b[m][0]:.4f} +- {b[m][1]:.4f}" for m in METRICS)
                  + f" | {r['markov']['mrr']:.4f} | {ci_text(r['minus_timed'])} |")
    md += ["", "Training-free lines (every check-in, any fraction): " + "; ".join(
        f"{name}: Acc@1 {v['acc@1']:.4f}, Acc@10 {v['acc@10']:.4f}, MRR {v['mrr']:.4f}"
        for name, v in results["lines"].items()), "",
        "## The prompt-information bound per fraction",
        "The facts reader (each candidate's rank and what the prompt states about it, of the top "
        f"{cfg.explainer.num_candidates}, fitted on val) minus the backbone's own order, test MRR, paired CI "
        "over the seed-mean per-sample difference:", "",
        "| fraction | test samples | backbone MRR | reader MRR (seed mean) | reader minus backbone | relative |",
        "|---|---|---|---|---|---|"]
    for r in results["fractions"]:
        ci = r["bound"]
        base_mrr = r["reader_mrr"] - ci.diff
        md.append(f"| {r['fraction']:g} | {r['bound_test_samples']} | {base_mrr:.4f} | {r['reader_mrr']:.4f} | "
                  f"{ci_text(ci)} | {100 * ci.diff / base_mrr:+.1f}% |")
    md += search_report(results["fractions"])
    md += ["", "## Cost", "| fraction | epochs per seed | fit seconds per seed |", "|---|---|---|",
           *[f"| {r['fraction']:g} | {r['epochs']} | {[round(s) for s in r['fit_seconds']]} |"
             for r in results["fractions"]], "", "![data efficiency](data_efficiency.png)"]
    return "\n".join(md)


def search_report(rows: list[dict]) -> list[str]:
    """The backbone's search per fraction: every setting's seed-0 val MRR (what selects), test MRR, epochs and
    fit seconds; the chosen one in bold; the search's total fit time."""
    if not any(r.get("search") for r in rows):
        return []
    md = ["", "## The backbone's search per fraction",
          "Seed 0 of every setting (`efficiency.search`, overrides of the config's train and backbone "
          "sections) at every fraction; the best val MRR (bold) trains every seed. Test MRR for reference only.",
          "", "| fraction | setting | val MRR | test MRR | epochs | fit seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        for t in r["search"]:
            mark = "**" if t["setting"] == r["setting"] else ""
            md.append(f"| {r['fraction']:g} | {mark}`{t['setting']}`{mark} | {mark}{t['best_val_mrr']:.4f}{mark} | "
                      f"{t['test_mrr']:.4f} | {t['epochs']} | {t['fit_seconds']:.0f} |")
    total = sum(t["fit_seconds"] for r in rows for t in r["search"])
    md += ["", f"The search's fits took {total:,.0f} s in all (seed 0, every setting and fraction)."]
    return md


def write_results(cfg: DictConfig, results: dict, run_dir: Path) -> None:
    """results.md, results.json (CIs as dicts) and data_efficiency.png in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data_efficiency_plot(results, run_dir / "data_efficiency.png")
    write_or_explain(run_dir / "results.md", report(cfg, results) + "\n", "run.output_dir")
    write_or_explain(run_dir / "results.json", json.dumps(results, indent=2, default=dataclasses.asdict),
                     "run.output_dir")
