"""PNG plots of results (matplotlib, headless): what users look at before they read a table.

One figure per file, closed after saving. Every function takes numbers the recipe already computed (or the
run's TensorBoard events) and draws only what is there.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recpie.evaluation.bootstrap import PairedCI

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110  # pixels per inch of every saved figure

# The per-cycle trends of a RecPIE run: (panel title, y label, {logged key: legend label}, y limits or None).
TREND_PANELS = (
    ("Target log-probability with / without the explanation", "mean log p(target)",
     {"reward/with_explanation_logp": "with the explanation", "reward/null_logp": "with the null explanation"}, None),
    ("PPO reward (raw: own minus the baseline's)", "mean raw reward",
     {"reward/raw_mean": "raw reward", "reward/content": "content (own minus another sample's)"}, None),
    ("Explainer KL to its reference", "KL per sequence (k1)", {"ppo/kl_k1_per_seq": "KL"}, None),
    ("Explanation format", "share of rollouts", {"reward/parse_rate": "parseable", "reward/eos_rate": "ended (EOS)"},
     (-0.05, 1.05)),
    ("Fusion: use of the explanations", "value",
     {"fusion/gate_mean": "gate mean", "fusion/liked_bonus": '"may like" bonus'}, None),
)

# The same per PPO iteration (RecPIEModule.log_ppo_iteration, x = the policy version): is the reward live?
ITERATION_PANELS = (
    ("PPO reward per iteration (raw: own minus the baseline's)", "mean over the rollout",
     {"ppo_iteration/reward_mean": "raw reward", "ppo_iteration/reward_content": "content (own minus another's)",
      "ppo_iteration/reward_over_reference": "policy minus the warm-up's, same prompts"}, None),
    ('Rollouts rewarded above 0, "may like" naming the target', "share of rollouts",
     {"ppo_iteration/reward_positive_share": "reward > 0", "ppo_iteration/like_hit_rate": '"may like" hits'},
     (-0.05, 1.05)),
    ("Explainer KL to its reference", "KL per sequence (k1)", {"ppo_iteration/kl_per_seq": "KL"}, None),
)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _ci_errors(cis: Sequence[PairedCI]) -> list[list[float]]:
    """matplotlib's asymmetric yerr/xerr: distances from each difference down to low and up to high."""
    return [[c.diff - c.low for c in cis], [c.high - c.diff for c in cis]]


def data_efficiency_plot(results: dict, path: Path) -> None:
    """MRR and Acc@10 of the backbone (seed mean, bootstrap CI band) and Markov against the train fraction
    (log x), the training-free counters as horizontal lines; then the bound (facts reader minus backbone,
    MRR) per fraction with its paired CI."""
    rows = results["fractions"]
    x = [r["fraction"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, metric, label in ((axes[0], "mrr", "MRR"), (axes[1], "acc@10", "Acc@10")):
        mean = [r["backbone_ci"][metric][0] for r in rows]
        ax.plot(x, mean, "o-", color="C0", label="backbone (seed mean)")
        ax.fill_between(x, [r["backbone_ci"][metric][1] for r in rows], [r["backbone_ci"][metric][2] for r in rows],
                        color="C0", alpha=0.2, label="95% CI")
        ax.plot(x, [r["markov"][metric] for r in rows], "s--", color="C1", label="Markov (kept steps)")
        for i, (name, value) in enumerate(results["lines"].items()):
            ax.axhline(value[metric], color=f"C{2 + i}", linestyle=":", label=f"{name} (training-free)")
        ax.set(xscale="log", xlabel="share of the train targets", ylabel=f"test {label}", title=f"test {label}")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_xticks([], minor=True)  # a log axis's minor labels would overprint the fractions
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    bound = [r["bound"] for r in rows]
    axes[2].errorbar(x, [b.diff for b in bound], yerr=_ci_errors(bound), fmt="o-", color="C3", capsize=3)
    axes[2].axhline(0, color="grey", linewidth=0.8)
    axes[2].set(xscale="log", xlabel="share of the train targets", ylabel="MRR gain over the backbone's order",
                title="prompt-information bound (facts reader - backbone)")
    axes[2].set_xticks(x, [f"{v:g}" for v in x])
    axes[2].set_xticks([], minor=True)
    axes[2].grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the shared legend below the panels
    _save(fig, path)


def baselines_plot(results: dict, path: Path, metrics: Sequence[str] = ("acc@1", "acc@10", "mrr")) -> None:
    """Left: each model's test metrics (mean over seeds; error bar: std over seeds, drawn for models with
    several runs). Right: the backbone minus the best counter per seed, paired bootstrap CIs."""
    models = list(results["test"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 1.5 + 0.3 * len(models) * len(metrics)),
                                      gridspec_kw={"width_ratios": (3, 2)})
    height = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        runs = [np.array([run[metric] for run in results["test"][m]]) for m in models]
        y = np.arange(len(models)) + (i - (len(metrics) - 1) / 2) * height
        means = np.array([r.mean() for r in runs])
        left.barh(y, means, height, label=metric, color=f"C{i}")
        seeded = np.array([len(r) > 1 for r in runs])
        if seeded.any():
            left.errorbar(means[seeded], y[seeded], xerr=[r.std(ddof=1) for r in runs if len(r) > 1], fmt="none",
                          ecolor="black", capsize=3)
    left.set_yticks(np.arange(len(models)), models, fontsize=8)
    left.invert_yaxis()  # the first model on top, as in results.md
    left.set(xlabel="test value (mean over seeds; error bar: std over seeds)", title="Test metrics per model")
    left.legend(fontsize=8)
    left.grid(axis="x", alpha=0.3)
    groups = results["bootstrap"]
    for k, (seed, cis) in enumerate(groups.items()):
        cis = [PairedCI(**c) for c in cis]
        x = np.arange(len(cis)) + (k - (len(groups) - 1) / 2) * 0.15
        right.errorbar(x, [c.diff for c in cis], yerr=_ci_errors(cis), fmt="o", capsize=3,
                       label="mean over the seeds" if seed == "mean" else f"seed {seed}")
    level = next(iter(groups.values()))[0]["level"]
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xticks(np.arange(len(metrics)), metrics)
    right.set(ylabel=f"test difference ({100 * level:.0f}% paired bootstrap CI)")
    right.set_title(f"Backbone minus the best counter on val MRR:\n{results['best_counter']}", fontsize=9)
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def attribution_plot(fed: Mapping[str, Mapping[str, float]], own_vs: Mapping[str, PairedCI], path: Path,
                     title: str) -> None:
    """Is a gain the explanations' content? Left: test MRR of the trained RecPIE model fed each sample's own,
    the null and another sample's explanation. Right: own minus each other feed, paired bootstrap CIs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(fed)
    bars = left.bar(range(len(names)), [fed[n]["mrr"] for n in names], color=[f"C{i}" for i in range(len(names))])
    left.bar_label(bars, fmt="%.4f", fontsize=8)  # the differences are often too small to see in the bars
    left.set_xticks(range(len(names)), names, fontsize=8)
    left.set(ylabel="test MRR", title="RecPIE model fed ...")
    left.grid(axis="y", alpha=0.3)
    cis = list(own_vs.values())
    right.errorbar(range(len(cis)), [c.diff for c in cis], yerr=_ci_errors(cis), fmt="o", capsize=4, color="C3")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xticks(range(len(cis)), [f"own minus {n}" for n in own_vs], fontsize=8)
    right.set(ylabel=f"test MRR difference ({100 * cis[0].level:.0f}% paired CI)", title="Own explanation minus ...")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def logged_series(event_dir: Path, tags: Sequence[str], by_cycle: bool = True
                  ) -> tuple[dict[str, tuple[list, list]], str]:
    """{tag: (x, values)} for the ``tags`` present in a run's TensorBoard events, and the x axis' name.

    x is the cycle (epoch) where Lightning logged its "epoch" scalar at each of the tag's steps (the smallest
    value at a step: the test logs the epoch after the last one at the last training step), else (or without
    ``by_cycle``) the step. A step logged twice (a resumed run) keeps its last value."""
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0}).Reload()
    present = set(events.Tags()["scalars"])
    series = {}
    for tag in (t for t in tags if t in present):
        by_step = {e.step: e.value for e in events.Scalars(tag)}
        series[tag] = (sorted(by_step), [by_step[s] for s in sorted(by_step)])
    if not by_cycle:
        return series, "step"
    epoch_at: dict[int, int] = {}
    for e in events.Scalars("epoch") if "epoch" in present else ():
        epoch_at[e.step] = min(epoch_at.get(e.step, int(e.value)), int(e.value))
    if not all(s in epoch_at for steps, _ in series.values() for s in steps):
        return series, "training step"
    return {tag: ([epoch_at[s] for s in steps], values) for tag, (steps, values) in series.items()}, "cycle"


def cycle_trends_plot(event_dir: Path, path: Path, title: str) -> list[str]:
    """One panel per TREND_PANELS entry with a logged key; returns the keys drawn (none: no file)."""
    series, x_label = logged_series(event_dir, [tag for _, _, keys, _ in TREND_PANELS for tag in keys])
    return _trend_panels(series, x_label, TREND_PANELS, path, title)


def ppo_iterations_plot(event_dir: Path, path: Path, title: str) -> list[str]:
    """One panel per ITERATION_PANELS entry with a logged key, x = the policy version (each PPO iteration
    adds one); returns the keys drawn (none, e.g. a run without PPO: no file)."""
    series, _ = logged_series(event_dir, [tag for _, _, keys, _ in ITERATION_PANELS for tag in keys], by_cycle=False)
    return _trend_panels(series, "policy version (+1 per PPO iteration)", ITERATION_PANELS, path, title)


def _trend_panels(series: dict[str, tuple[list, list]], x_label: str, spec: Sequence, path: Path, title: str
                  ) -> list[str]:
    """The panels of ``spec`` (title, y label, {key: label}, y limits) with a key in ``series``, one figure;
    returns the keys drawn (none: no file)."""
    panels = [(name, y_label, {t: lab for t, lab in keys.items() if t in series}, y_limits)
              for name, y_label, keys, y_limits in spec]
    panels = [p for p in panels if p[2]]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, y_label, keys, y_limits) in zip(axes[0], panels, strict=True):
        for tag, label in keys.items():
            ax.plot(*series[tag], "o-", label=label)
        ax.set(xlabel=x_label, ylabel=y_label, title=name, ylim=y_limits)
        ax.title.set_fontsize(9)
        ax.ticklabel_format(axis="y", useOffset=False)  # values, not an offset plus tiny ticks
        xs = sorted({x for tag in keys for x in series[tag][0]})
        if len(xs) <= 12:  # a tick per logged point (a lone point would get fractional ticks around it)
            ax.set_xticks(xs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return list(series)
