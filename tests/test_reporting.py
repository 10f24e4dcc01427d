"""The report builders print given numbers as expected, and every plot writes a readable PNG of its size."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from recpie.evaluation.bootstrap import PairedCI
from recpie.evaluation.ranking import metrics_from_ranks
from recpie.evaluation.tables import ci_table, ci_text
from recpie.reporting.data_efficiency import report as data_efficiency_report
from recpie.reporting.plots import (
    DPI,
    attribution_plot,
    baselines_plot,
    cycle_trends_plot,
    data_efficiency_plot,
    logged_series,
    ppo_iterations_plot,
)
from recpie.reporting.recpie import SeedReport, seed_section


def ci(diff, low, high, metric="mrr"):
    return PairedCI(metric, diff, low, high, 0.95)


def png_size(path):
    """(height, width) in pixels of a PNG matplotlib reads back."""
    return matplotlib.image.imread(path).shape[:2]


def pixels(height_in, width_in):
    """(height, width) in pixels of a figure of that many inches."""
    return round(height_in * DPI), round(width_in * DPI)


def test_one_ci_format_for_text_and_tables():
    assert ci_text(ci(0.01234, -0.002, 0.0301)) == "+0.0123 [-0.0020, +0.0301]"
    assert "| mrr | -0.0500 | [-0.0700, -0.0300] | * |" in ci_table([ci(-0.05, -0.07, -0.03)])


def efficiency_results():
    """Two fractions of the data-efficiency study, as its recipe returns them (CIs as PairedCI)."""
    def row(fraction, kept, mrr, bound):
        return {"fraction": fraction, "kept": {"train_steps_kept": kept, "train_steps": 1000}, "seeds": [0, 1],
                "backbone": {"acc@1": [0.2, 0.01], "acc@10": [0.6, 0.02], "mrr": [mrr, 0.005]},
                "backbone_ci": {"acc@10": [0.6, 0.58, 0.62], "mrr": [mrr, mrr - 0.02, mrr + 0.02]},
                "markov": {"acc@1": 0.1, "acc@10": 0.2, "mrr": 0.15}, "reader_mrr": mrr + bound.diff,
                "bound": bound, "minus_timed": ci(mrr - 0.4, mrr - 0.42, mrr - 0.38),
                "fit_seconds": [12.4, 13.6], "epochs": [3, 4], "bound_test_samples": 50}
    return {"fractions": [row(0.1, 100, 0.3, ci(0.02, 0.01, 0.03)), row(1.0, 1000, 0.45, ci(0.01, -0.001, 0.02))],
            "unit": "targets", "draw_seed": 0, "samples": {"val": 70, "test": 50},
            "lines": {"counter": {"acc@1": 0.25, "acc@10": 0.7, "mrr": 0.38},
                      "timed counter": {"acc@1": 0.3, "acc@10": 0.71, "mrr": 0.4}}}


def test_data_efficiency_report_lines():
    cfg = OmegaConf.create({"name": "tiny", "description": "d", "data": {"source": "foursquare"},
                            "explainer": {"num_candidates": 5}})
    lines = data_efficiency_report(cfg, efficiency_results()).splitlines()
    assert "| fraction | train steps kept | seeds | backbone Acc@1 | backbone Acc@10 | backbone MRR | Markov MRR | " \
           "backbone minus timed counter, MRR |" in lines  # the last training-free line is the one compared
    assert "| 0.1 | 100 of 1,000 | 2 | 0.2000 +- 0.0100 | 0.6000 +- 0.0200 | 0.3000 +- 0.0050 | 0.1500 | " \
           "-0.1000 [-0.1200, -0.0800] |" in lines
    assert "| 1 | 50 | 0.4500 | 0.4600 | +0.0100 [-0.0010, +0.0200] | +2.2% |" in lines
    assert "| 0.1 | [3, 4] | [12, 14] |" in lines
    assert lines[-1] == "![data efficiency](data_efficiency.png)"


def seed_report(verdicts=None):
    return SeedReport(
        seed=3, vs_control=[ci(0.01, -0.01, 0.03, "acc@1"), ci(0.02, 0.005, 0.035)],
        fed={"own explanation": metrics_from_ranks([1.0, 2.0]), "null explanation": metrics_from_ranks([2.0, 2.0]),
             "another sample's explanation": metrics_from_ranks([1.0, 4.0])},
        own_vs={"null explanation": ci(0.02, 0.01, 0.03), "another sample's explanation": ci(0.01, -0.002, 0.02)},
        verdicts=verdicts, quality={"n": 8, "parse_rate": 0.75}, seconds={"RecPIE": 61.4, "control": 20.2},
        explained=12, examples={1: ["I like the bar."]}, events=Path("unused"))


def test_recpie_seed_section_lines():
    data = SimpleNamespace(user_ids=np.array([500, 501]), user=np.array([0, 0, 1]),
                           splits={"test": SimpleNamespace(target=np.array([0, 2]))})
    lines = seed_section(seed_report(), data)
    assert lines[0] == "## Seed 3" and lines[-1] == ""
    assert "| mrr | 0.0200 | [+0.0050, +0.0350] | * |" in lines[4]  # RecPIE minus control
    null_row = next(row for row in "\n".join(lines).splitlines() if row.startswith("| null explanation |"))
    assert null_row.startswith("| null explanation | 0.0000 | 1.0000 |") and null_row.endswith("| 0.5000 |")
    assert "Own minus null: MRR +0.0200 [+0.0100, +0.0300]; own minus another sample's: MRR +0.0100 " \
           "[-0.0020, +0.0200]." in lines
    assert any(line.startswith("Cost: RecPIE 61 s, control 20 s in this invocation (")
               and line.endswith("; 12 samples explained.") for line in lines)
    assert "- test sample 1 (user 501): I like the bar." in lines  # sample 1's target is check-in 2, user 1
    assert not any(line.startswith("Verdicts") for line in lines)
    assert "ppo_iterations_seed3.png" not in "\n".join(lines)  # no PPO, no per-iteration plot
    assert "(ppo_iterations_seed3.png)" in "\n".join(seed_section(replace(seed_report(), ppo_iterations=2), data))
    with_study = seed_section(replace(seed_report(), reference=["Against the data-efficiency study (s):"]), data)
    assert with_study[with_study.index("Against the data-efficiency study (s):") - 1] == ""  # after the attribution
    assert len(with_study) == len(lines) + 1
    fits = [{"cycle": 0, "fusion/fit_rows": 0.0, "fusion/fit_explained_rows": 0.0},
            {"cycle": 1, "fusion/fit_rows": 120.0, "fusion/fit_explained_rows": 60.0, "fusion/fitted_liked_bonus": 1.25,
             "fusion/fitted_liked": 0.75, "fusion/fitted_disliked": -0.25, "fusion/fitted_unnamed": -0.5}]
    fused = seed_section(replace(seed_report(), fusion=fits), data)
    assert "cycle 0: 0 rows (0 explained), nothing to fit on; cycle 1: 120 rows (60 explained), liked minus unnamed " \
           "+1.250 logits (liked +0.750, disliked -0.250, unnamed -0.500)." in next(
               line for line in fused if line.startswith("The verdict fusion"))


def test_plots_write_pngs_of_their_size(tmp_path):
    data_efficiency_plot(efficiency_results(), tmp_path / "curve.png")
    assert png_size(tmp_path / "curve.png") == pixels(4.2, 15)
    attribution_plot(seed_report().fed, seed_report().own_vs, tmp_path / "attribution.png", "seed 3")
    assert png_size(tmp_path / "attribution.png") == pixels(4, 11)
    runs = [{"acc@1": 0.2, "acc@10": 0.6, "mrr": 0.3}, {"acc@1": 0.22, "acc@10": 0.62, "mrr": 0.31}]
    baselines = {"test": {"counter": runs[:1], "backbone": runs}, "best_counter": "counter",
                 "bootstrap": {"0": [asdict(ci(0.01, 0.0, 0.02, m)) for m in ("acc@1", "acc@10", "mrr")],
                               "mean": [asdict(ci(0.02, 0.01, 0.03, m)) for m in ("acc@1", "acc@10", "mrr")]}}
    baselines_plot(baselines, tmp_path / "baselines.png")
    assert png_size(tmp_path / "baselines.png") == pixels(1.5 + 0.3 * 2 * 3, 14)  # grows with the models


def test_cycle_trends_read_from_tensorboard_events(tmp_path):
    """Lightning logs "epoch" with each metric; the test logs it once more, at the last training step."""
    writer = SummaryWriter(tmp_path / "events")
    for cycle, step in enumerate((3, 6, 9)):
        writer.add_scalar("epoch", cycle, step)
        writer.add_scalar("reward/raw_mean", 0.1 * cycle, step)
        writer.add_scalar("ppo/kl_k1_per_seq", 0.01 * cycle, step)
        writer.add_scalar("reward/parse_rate", 0.5 + 0.2 * cycle, step)
    writer.add_scalar("epoch", 3, 9)
    writer.add_scalar("val/mrr", 0.4, 9)  # logged, but no trend panel shows it
    writer.close()
    series, x_label = logged_series(tmp_path / "events", ["reward/raw_mean", "reward/null_logp"])
    assert x_label == "cycle" and series["reward/raw_mean"][0] == [0, 1, 2]
    assert series["reward/raw_mean"][1] == pytest.approx([0.0, 0.1, 0.2]) and "reward/null_logp" not in series
    drawn = cycle_trends_plot(tmp_path / "events", tmp_path / "trends.png", "seed 0")
    assert drawn == ["reward/raw_mean", "ppo/kl_k1_per_seq", "reward/parse_rate"]
    assert png_size(tmp_path / "trends.png") == pixels(3.8, 3 * 4.2)  # one panel each


def test_each_ppo_iteration_is_drawn_at_its_policy_version(tmp_path):
    """RecPIEModule.log_ppo_iteration logs at x = the policy version (1 after the warm-up, +1 per iteration)."""
    writer = SummaryWriter(tmp_path / "events")
    for version in (2, 3, 4):
        writer.add_scalar("ppo_iteration/reward_content", 0.01 * version, version)
        writer.add_scalar("ppo_iteration/kl_per_seq", 0.1, version)
    writer.add_scalar("ppo_iteration/reward_content", -1.0, 2)  # a resumed run logs its repeat: the last counts
    writer.add_scalar("reward/raw_mean", 0.3, 9)  # a per-cycle scalar: not an iteration's
    writer.close()
    drawn = ppo_iterations_plot(tmp_path / "events", tmp_path / "iterations.png", "seed 0")
    assert drawn == ["ppo_iteration/reward_content", "ppo_iteration/kl_per_seq"]
    assert png_size(tmp_path / "iterations.png") == pixels(3.8, 2 * 4.2)  # the reward and KL panels
    frozen = SummaryWriter(tmp_path / "frozen")
    frozen.add_scalar("reward/raw_mean", 0.3, 9)
    frozen.close()
    assert ppo_iterations_plot(tmp_path / "frozen", tmp_path / "none.png", "seed 0") == []
    assert not (tmp_path / "none.png").exists()


def test_cycle_trends_without_the_keys_write_nothing(tmp_path):
    writer = SummaryWriter(tmp_path / "events")
    writer.add_scalar("val/mrr", 0.4, 1)
    writer.close()
    assert cycle_trends_plot(tmp_path / "events", tmp_path / "trends.png", "control") == []
    assert not (tmp_path / "trends.png").exists()
