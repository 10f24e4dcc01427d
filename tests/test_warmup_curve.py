"""The warm-up curve (recpie.sft_eval_every): one point per eval step with the examples seen so far, agreement
with the facts teacher read as the gate reads it (1 when "may like" names the teacher's top-1, 0 when it
names another candidate), and a measurement only: the same run without it tests the same ranks."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from joint_parts import joint_parts
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_recpie_module import small_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.components.backbone import Backbone
from recpie.errors import ConfigError
from recpie.explainer.warmup import FactsTeacher, templated_choice
from recpie.recipes.recpie import fit_variant
from recpie.reporting.recpie import warmup_curve_lines
from recpie.utils.seeds import subset_ids

pytestmark = pytest.mark.slow


def _texts_naming(trainer, writer, data, pick) -> tuple[dict[str, str], float, float, float]:
    """Templated explanations of the curve's val prompts whose "may like" names the candidate at position
    ``pick(teacher order row, labels)``, keyed by prompt, and the agreement, hit rate and agreement where the
    teacher departs from candidate 1 they should score (a label shared by several candidates shares the
    mention)."""
    ids, cfg = trainer.curve_ids, trainer.cfg
    batch = writer.batch("val", ids)
    _, candidates, logits = writer.recommender.predict_top(batch)
    prompts = writer.prompts("val", ids, candidates, logits)
    order = FactsTeacher.fit(writer.recommender.backbone, data, cfg).order(
        data, "val", ids.numpy(), candidates.numpy(), cfg.explainer, logits.numpy())
    texts, agreement, hit, departs = {}, [], [], []
    for r, (i, row, z, target) in enumerate(zip(ids.tolist(), candidates.tolist(), logits.tolist(),
                                                writer.recommender.target(batch).tolist(), strict=True)):
        labels = [data.catalogue.label(p) for p in row]
        j = pick(order[r], labels)
        texts[prompts[r]] = templated_choice(data, "val", i, row, cfg.explainer, like=row[j], logits=z).text
        share = 1 / labels.count(labels[j])
        agreement.append(share * (labels[j] == labels[order[r][0]]))
        hit.append(share * (target in row and labels[row.index(target)] == labels[j]))
        departs.append(order[r][0] != 0)
    departed = [a for a, d in zip(agreement, departs, strict=True) if d]
    return texts, float(np.mean(agreement)), float(np.mean(hit)), float(np.mean(departed)) if departed else np.nan


def test_points_examples_and_agreement_with_a_forced_choice(tmp_path, nyc_data, tiny_llm_dir, monkeypatch):  # noqa: F811
    writer, trainer, host = joint_parts(tmp_path, nyc_data, tiny_llm_dir, **{
        "recpie.sft_target": "facts", "explainer.show_scores": True, "recpie.sft_steps": 3, "recpie.sft_batch": 2,
        "recpie.sft_eval_every": 2, "recpie.sft_eval_samples": 16, "recpie.generation_batch": 8})
    assert trainer.curve_ids.tolist() == subset_ids(len(nyc_data.splits["val"]), 16, trainer.rc.subset_seed).tolist()
    agreeing, expected, hits, on_departures = _texts_naming(trainer, writer, nyc_data,
                                                            lambda order, labels: order[0])
    calls = []

    def fake(prompts, states, sample, max_new_tokens=None):  # the policy's greedy text, forced
        assert not sample
        calls.append(len(prompts))
        return SimpleNamespace(texts=[agreeing[p] for p in prompts])

    monkeypatch.setattr(trainer.explainer, "generate", fake)
    trainer.prepare(torch.optim.AdamW(trainer.explainer.trainable_parameters(), lr=1e-2))
    curve = trainer.curve
    assert [(p["step"], p["examples"]) for p in curve] == [(2, 4), (3, 6)]  # every 2 steps, and after the last
    assert calls == [8, 8] * 2 and all(p["generate_calls"] == 2 and p["samples"] == 16 for p in curve)
    for p in curve:
        assert p["parse_rate"] == 1.0 and p["names_a_candidate"] == 1.0
        assert p["agreement"] == pytest.approx(expected) and expected > 0.5
        assert p["like_hit"] == pytest.approx(hits)
        assert p["departure_agreement"] == pytest.approx(on_departures, nan_ok=True)
    if expected == 1.0:  # no label shared with the teacher's top-1: "may like" hits where the teacher does
        assert all(p["like_hit"] == p["teacher_hit"] for p in curve)
    assert [x for x, _ in host.logged["sft_eval"]] == [4, 6] and "agreement" in host.logged["sft_eval"][0][1]
    saved = json.loads((tmp_path / "warmup_curve_seed0.json").read_text())
    assert [p["examples"] for p in saved] == [4, 6]
    assert (tmp_path / "warmup_curve_seed0.csv").read_text().splitlines()[0].startswith("step,examples,samples,")
    lines = "\n".join(warmup_curve_lines(curve))
    assert "Warm-up curve (16 val samples" in lines and "| 4 | 2 | 1.000 |" in lines

    others, none, _, none_departing = _texts_naming(trainer, writer, nyc_data, lambda order, labels: next(
        (j for j in range(len(labels)) if labels[j] != labels[order[0]]), order[-1]))
    monkeypatch.setattr(trainer.explainer, "generate",
                        lambda prompts, states, sample, max_new_tokens=None: SimpleNamespace(
                            texts=[others[p] for p in prompts]))
    point = trainer.curve_point(FactsTeacher.fit(writer.recommender.backbone, nyc_data, trainer.cfg), 4, 8)
    assert none == 0.0 and point["agreement"] == 0.0 and point["parse_rate"] == 1.0
    assert point["departure_agreement"] == pytest.approx(none_departing, nan_ok=True)
    assert np.isnan(none_departing) or none_departing == 0.0
    assert len(trainer.curve) == 3 and trainer.state_dict()["warmup_curve"][-1]["examples"] == 8


def test_the_curve_changes_no_test_rank_and_no_cached_explanation(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """The same run with and without the curve (a template warm-up, whose curve fits a teacher of its own,
    which draws from the global generator, as the warm-up's LoRA dropout does): the same test ranks and
    explanations, the same cache."""
    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"recpie.cycles": 1, "recpie.sft_steps": 2, "recpie.sft_eval_samples": 8,
                                               "explainer.lora.dropout": 0.1})
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 8, cfg.recpie.subset_seed) for s in ("val", "test")}
    runs = {}
    for every in (0, 1):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.recpie.sft_eval_every = every
        run_cfg.explainer.explanation_cache = str(tmp_path / f"expl{every}")
        runs[every] = fit_variant(run_cfg, nyc_data, backbone, eval_ids, tmp_path / f"every{every}", "recpie", seed=0)
    assert [p["examples"] for p in runs[1]["module"].explainer_trainer.curve] == [2, 4]
    assert runs[0]["module"].explainer_trainer.curve == [] and not (tmp_path / "every0" / "warmup_curve_seed0.json"
                                                                   ).exists()
    assert len(json.loads((tmp_path / "every1" / "warmup_curve_seed0.json").read_text())) == 2
    events = EventAccumulator(str(tmp_path / "every1" / "tensorboard" / "recpie" / "seed0")).Reload()
    assert [e.step for e in events.Scalars("sft_eval/agreement")] == [2, 4]
    np.testing.assert_array_equal(runs[1]["ranks"], runs[0]["ranks"])
    assert list(runs[1]["texts"].values()) == list(runs[0]["texts"].values())
    cached = [(tmp_path / f"expl{every}" / "explanations.jsonl").read_text() for every in (0, 1)]
    assert cached[1] == cached[0]  # the curve's texts are never cached (and the keys are the same run's)

    with pytest.raises(ConfigError, match="recpie.sft_eval_every=1: .*granularity=user"):
        small_cfg(tmp_path, tiny_llm_dir, **{"recpie.sft_eval_every": 1, "explainer.granularity": "candidate"})
    with pytest.raises(ConfigError, match="recpie.sft_eval_samples=0"):
        small_cfg(tmp_path, tiny_llm_dir, **{"recpie.sft_eval_samples": 0})
