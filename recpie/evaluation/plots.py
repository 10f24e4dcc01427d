"""PNG plots of results (matplotlib, headless): what users look at before they read a table."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


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
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    bound = [r["bound"] for r in rows]
    errors = [[b.diff - b.low for b in bound], [b.high - b.diff for b in bound]]
    axes[2].errorbar(x, [b.diff for b in bound], yerr=errors, fmt="o-", color="C3", capsize=3)
    axes[2].axhline(0, color="grey", linewidth=0.8)
    axes[2].set(xscale="log", xlabel="share of the train targets", ylabel="MRR gain over the backbone's order",
                title="prompt-information bound (facts reader - backbone)")
    axes[2].set_xticks(x, [f"{v:g}" for v in x])
    axes[2].grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the shared legend below the panels
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
