"""results.md, results.json and the per-seed plots of the ``recpie`` recipe (RecPIE against its own backbone)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recpie.data.stats import fraction_line
from recpie.data.types import CheckinData
from recpie.evaluation.bootstrap import PairedCI
from recpie.evaluation.tables import ci_table, ci_text, markdown_table, mean_std_table, metrics_table
from recpie.evaluation.verdicts import verdict_table
from recpie.reporting.plots import attribution_plot, cycle_trends_plot, ppo_iterations_plot
from recpie.utils.files import write_or_explain
from recpie.utils.machine import machine_line

HEADLINE = ("acc@1", "acc@10", "mrr")


@dataclass
class SeedReport:
    """One seed's numbers, computed by the recipe; ``seed_section`` prints them."""
    seed: int
    vs_control: list[PairedCI]  # RecPIE minus its control, one per metric
    fed: dict[str, dict[str, float]]  # test metrics of the RecPIE model per explanation fed ("own explanation", ...)
    own_vs: dict[str, PairedCI]  # MRR: own explanation minus each other feed
    verdicts: dict | None  # explainer.encoder=verdict: recpie.evaluation.verdicts.verdict_summary
    quality: dict[str, float]  # explanation quality of the greedy test explanations
    seconds: dict[str, float]  # wall time of "RecPIE" and "control"
    explained: int  # samples with a stored explanation
    examples: dict[int, list[str]]  # a few test sample ids and their explanations
    events: Path  # the RecPIE variant's TensorBoard events, for the per-cycle trends
    reference: list[str] = field(default_factory=list)  # recpie.reference_study: lines against the study's models
    fusion: list[dict] = field(default_factory=list)  # per cycle, what a fitted fusion fitted (fit_fusion)
    warmup_curve: list[dict] = field(default_factory=list)  # recpie.sft_eval_every: the warm-up curve's points
    ppo_iterations: int = 0  # recpie.ppo_iterations per cycle: above 0, seed_plots draws each iteration's reward


def seed_section(report: SeedReport, data: CheckinData) -> list[str]:
    lines = [f"## Seed {report.seed}", "",
             "RecPIE minus its own backbone (control), paired bootstrap over the same test samples:", "",
             ci_table(report.vs_control), "", *attribution_lines(report),
             f"![own, null and another sample's explanation](attribution_seed{report.seed}.png) "
             f"![per-cycle reward, KL, parse and EOS rates](cycle_trends_seed{report.seed}.png)"
             + (f" ![each PPO iteration's reward, its content part and KL](ppo_iterations_seed{report.seed}.png)"
                if report.ppo_iterations > 0 else ""), "",
             *warmup_curve_lines(report.warmup_curve), *verdict_lines(report.verdicts),
             *fusion_lines(report.fusion), *report.reference,
             "Explanation quality (greedy, test samples):", "",
             metrics_table({"RecPIE": report.quality}, names=[k for k in report.quality if k != "n"], first="run"),
             "", f"Cost: RecPIE {report.seconds['RecPIE']:.0f} s, control {report.seconds['control']:.0f} s in this "
             "invocation (a resumed or re-tested run counts only what it ran; provenance.json lists every "
             f"invocation); {report.explained} samples explained.", "", "Sample explanations:", ""]
    for i, texts in report.examples.items():
        lines.append(f"- test sample {int(i)} (user {data.user_ids[data.user[data.splits['test'].target[i]]]}): "
                     + " | ".join(texts))
    return [*lines, ""]


def attribution_lines(report: SeedReport) -> list[str]:
    """Whether a gain is the explanations' content: the trained RecPIE model on the same test samples
    with each sample's own explanation, with the null one, and with another sample's."""
    return ["The RecPIE model scored with each test sample's own explanation, with the null one, and with "
            "the explanation of the previous sample of its batch:", "",
            metrics_table(report.fed, first="RecPIE model, fed"), "",
            "Own minus " + "; own minus ".join(f"{name.removesuffix(' explanation')}: MRR {ci_text(ci)}"
                                               for name, ci in report.own_vs.items()) + ".", ""]


def warmup_curve_lines(points: list[dict]) -> list[str]:
    """recpie.sft_eval_every: the warm-up curve, one row per point (ExplainerTrainer.curve_point)."""
    if not points:
        return []
    rows = [[f"{p['examples']:.0f}", f"{p['step']:.0f}", f"{p['parse_rate']:.3f}", f"{p['agreement']:.3f}",
             # points of runs before the departure columns existed print "-" there
             f"{p['departure_agreement']:.3f}" if "departure_agreement" in p else "-",
             f"{p['like_hit']:.3f}", f"{p['teacher_hit']:.3f}", f"{p['top1_hit']:.3f}"] for p in points]
    first = points[0]
    return [f"Warm-up curve ({first['samples']:.0f} val samples, greedy explanations by the policy after each "
            "number of warm-up examples; agreement: the \"may like\" share on the facts teacher's top-1 of the "
            "same prompt; hit rates: how often \"may like\", the teacher's and the recommender's top-1 name the "
            f"target; {first['generate_calls']:.0f} generate call(s) per point):", "",
            markdown_table(["warm-up examples", "steps", "parse rate", "agreement with the teacher",
                            "agreement where the teacher departs from candidate 1", "\"may like\" hit rate",
                            "teacher's hit rate", "recommender top-1 hit rate"], rows), ""]


def verdict_lines(v: dict | None) -> list[str]:
    """explainer.encoder=verdict: does "may like" know more than the recommender's ranking?"""
    if v is None:
        return []
    return [f"Verdicts ({v['parsed']:.0f} parsed test explanations): \"may like\" names the recommender's "
            f"top-1 in {v['like_is_top1']:.1%}; where the target is among the candidates "
            f"({v['target_among_candidates']:.0f}), \"may like\" names it in {v['like_is_target']:.1%}, the "
            f"top-1 is it in {v['top1_is_target']:.1%}. Per candidate rank (a verdict that knows nothing "
            "beyond the rank has equal rates in the last two rows):", "", *verdict_table(v), ""]


def fusion_lines(fits: list[dict]) -> list[str]:
    """A fitted fusion (the verdict re-ranker): what it fitted before each cycle's recommender steps."""
    if not fits:
        return []
    cycles = "; ".join(
        f"cycle {f['cycle']}: {f['fusion/fit_rows']:.0f} rows ({f['fusion/fit_explained_rows']:.0f} explained)"
        + (f", liked minus unnamed {f['fusion/fitted_liked_bonus']:+.3f} logits "
           f"(liked {f['fusion/fitted_liked']:+.3f}, disliked {f['fusion/fitted_disliked']:+.3f}, "
           f"unnamed {f['fusion/fitted_unnamed']:+.3f})"
           if "fusion/fitted_liked_bonus" in f else ", nothing to fit on")
        for f in fits)
    return [f"The verdict fusion, fitted in closed form on the samples of recpie.fusion_fit_split (each with its own "
            f"and with the null explanation) before each cycle's recommender steps (values at the middle rank, "
            f"all-rows fit): {cycles}.", ""]


def seed_plots(report: SeedReport, run_dir: Path) -> None:
    """attribution_seed{S}.png, and cycle_trends_seed{S}.png and (a run with PPO) ppo_iterations_seed{S}.png
    from the RecPIE variant's TensorBoard events."""
    attribution_plot(report.fed, report.own_vs, run_dir / f"attribution_seed{report.seed}.png",
                     f"Seed {report.seed}: which explanation the trained RecPIE model is fed (test samples)")
    cycle_trends_plot(report.events, run_dir / f"cycle_trends_seed{report.seed}.png",
                      f"Seed {report.seed}: RecPIE training per cycle (from its TensorBoard events)")
    ppo_iterations_plot(report.events, run_dir / f"ppo_iterations_seed{report.seed}.png",
                        f"Seed {report.seed}: each PPO iteration (from its TensorBoard events)")


def write_results(cfg: DictConfig, data: CheckinData, run_dir: Path, per_seed: dict, reports: list[SeedReport], *,
                  n_test: int, seeds: list[int], peak_gb: float, explainer_dtype: str) -> None:
    """results.md (protocol, mean +- std over seeds, one section per seed) and results.json; prints a summary.
    ``per_seed``: {variant: [test metrics of each seed]}; ``peak_gb``: the run's peak resident memory;
    ``explainer_dtype``: the loaded explainer's dtype and why (recpie.explainer.llm.describe_dtype)."""
    head = [f"# {cfg.name}: RecPIE vs its own backbone", "",
            f"Protocol: {cfg.data.source} {cfg.data.city}, chronological 80/10/10 cut, full ranking over all "
            f"POIs; {n_test} test samples (subset seed {cfg.recpie.subset_seed}, 0 = all), seeds "
            f"{seeds}; explainer {cfg.explainer.model} ({cfg.explainer.quantization}) in {explainer_dtype}, "
            f"{cfg.recpie.cycles} cycles x {cfg.recpie.rec_steps_per_cycle} recommender steps, "
            f"{cfg.recpie.ppo_iterations} PPO iteration(s) per cycle; test scores the "
            f"{cfg.recpie.test_checkpoint} checkpoint. Peak RSS {peak_gb:.1f} GiB. Machine: {machine_line()}.", "",
            f"Supervision (backbone, fusion, explainer warm-up, rollouts, refreshes): {fraction_line(data)}; "
            "histories, prompts, val and test keep every check-in.", "",
            "Mean +- std over seeds:", "", mean_std_table(per_seed), ""]
    body = [line for report in reports for line in seed_section(report, data)]
    write_or_explain(run_dir / "results.md", "\n".join(head + body), "run.output_dir")
    summary = {name: [{k: float(v) for k, v in m.items()} for m in runs] for name, runs in per_seed.items()}
    fusion = {str(report.seed): report.fusion for report in reports if report.fusion}
    curves = {str(report.seed): report.warmup_curve for report in reports if report.warmup_curve}
    write_or_explain(run_dir / "results.json", json.dumps({"config": OmegaConf.to_container(cfg, resolve=True),
                                                           "per_seed": summary, "fusion_fits": fusion,
                                                           **({"warmup_curve": curves} if curves else {})}, indent=2),
                     "run.output_dir")
    print("\n" + "\n".join(head[:3]))
    print(mean_std_table(per_seed, names=HEADLINE))
    print("\n" + "\n".join(body))
    print(f"full tables: {run_dir / 'results.md'}")
