"""results.md, results.json and test_metrics.png of the baselines recipe.

The builders read the JSON-ready results dict (CIs as dicts, as results.json holds them), plus the data for
the protocol line and the counters' val tuning grids, which results.json does not hold.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from recpie.data.stats import fraction_line
from recpie.data.types import CheckinData
from recpie.evaluation.bootstrap import PairedCI
from recpie.evaluation.tables import ci_table, mean_std_table, metrics_table
from recpie.reporting.plots import baselines_plot
from recpie.utils.files import write_or_explain


def report(cfg: DictConfig, data: CheckinData, results: dict, grids: dict[str, dict[str, float]]) -> str:
    """results.md: mean +- std over seeds, the backbone per seed, paired CIs, breakdowns, tuning grids."""
    backbone = results["backbone_runs"]
    per_seed = {f"backbone seed {s}": m for s, m in zip(backbone, results["test"]["backbone"], strict=True)}
    md = [f"# {cfg.name}: baselines and backbone\n", cfg.description, "",
          f"Data: {data.source}, {data.num_users} users, {data.num_pois} POIs (all ranked), "
          f"{len(data.poi)} check-ins; {len(data.splits['train'])} train targets, train fraction "
          f"{fraction_line(data)} (the backbone and Markov learn from the kept targets; the counters and most "
          "popular are training-free and read every check-in), "
          f"{len(data.splits['val'])} val and {len(data.splits['test'])} test samples. Full ranking, "
          "fractional ranks under random tie-breaking. Counters, Markov and most popular are "
          "deterministic (one run; std 0).", "",
          "## Test, mean +- std over seeds", mean_std_table(results["test"]), "",
          "![test metrics per model, with the backbone's paired CIs](test_metrics.png)", "",
          "## Backbone per seed (test)", metrics_table(per_seed, first="run"), "",
          "| seed | epochs | best val MRR | fit seconds |", "|---|---|---|---|",
          *[f"| {s} | {r['epochs']} | {r['best_val_mrr']:.4f} | {r['fit_seconds']:.0f} |"
            for s, r in backbone.items()], "",
          f"## Paired bootstrap: backbone minus the best counter on val MRR ({results['best_counter']})"]
    for s, cis in results["bootstrap"].items():
        md += [f"\nseed {s}\n" if s != "mean" else "\nmean over the seeds (per-sample metrics averaged)\n",
               ci_table([PairedCI(**c) for c in cis])]
    md += ["", "## Test breakdowns"]
    for name, b in results["breakdowns"].items():
        md += [f"\n### {name}\n", metrics_table(b, first="group")]
    md += ["", "## Val tuning grids (val MRR)"]
    for name, grid in grids.items():
        md += [f"\n{name}\n", *[f"- {k}: {v:.4f}" for k, v in grid.items()]]
    return "\n".join(md)


def write_results(cfg: DictConfig, data: CheckinData, results: dict, grids: dict[str, dict[str, float]],
          run_dir: Path) -> None:
    """results.md, results.json and test_metrics.png in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_or_explain(run_dir / "results.md", report(cfg, data, results, grids) + "\n", "run.output_dir")
    write_or_explain(run_dir / "results.json", json.dumps(results, indent=2, default=str), "run.output_dir")
    baselines_plot(results, run_dir / "test_metrics.png")
