"""The joint LightningModule end to end on real NYC samples with the tiny LLM: cycles run, PPO and the
recommender both train, the control needs no LLM, a resumed run matches an uninterrupted one, and a
checkpoint holds no frozen base weights."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.__main__ import main
from recpie.components.backbone import Backbone
from recpie.config import load_experiment
from recpie.errors import ConfigError
from recpie.evaluation import metrics_from_ranks
from recpie.explainer.prompts import build_prompt
from recpie.models.recpie_module import RecPIEModule
from recpie.recipes.recpie import fit_variant, per_sample_verdicts
from recpie.utils.checkpoints import load_checkpoint, recorded_draw
from recpie.utils.seeds import subset_ids

pytestmark = pytest.mark.slow


def small_cfg(tmp_path, llm_dir, **overrides):
    items = {
        "run.output_dir": str(tmp_path), "run.seeds": "[0]", "trainer.accelerator": "cpu",
        "data.cache_dir": str(tmp_path / "data-cache"), "data.max_len": 12,
        "backbone.hidden_size": 16, "backbone.num_heads": 1, "backbone.num_layers": 1,
        "explainer.model": str(llm_dir), "explainer.quantization": "none", "explainer.dtype": "float32",
        "explainer.max_new_tokens": 8, "explainer.history_len": 3, "explainer.num_candidates": 3,
        "explainer.few_shot": False, "explainer.explanation_cache": str(tmp_path / "expl"),
        "rl.minibatch_size": 2, "rl.ppo_epochs": 1,
        "recpie.cycles": 2, "recpie.rec_steps_per_cycle": 3, "recpie.batch_size": 8, "recpie.ppo_iterations": 1,
        "recpie.rollout_prompts": 2, "recpie.refresh_budget": 4, "recpie.sft_steps": 1, "recpie.sft_batch": 2,
        "recpie.generation_batch": 8, "recpie.val_samples": 8, "recpie.test_samples": 8,
        **overrides,
    }
    return load_experiment("nyc_recpie", [f"{k}={v}" for k, v in items.items()])


@pytest.fixture
def setup(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    cfg = small_cfg(tmp_path, tiny_llm_dir)
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 8, cfg.recpie.subset_seed) for s in ("val", "test")}
    return cfg, backbone, eval_ids


def test_joint_training_runs_and_trains_both_sides(setup, nyc_data, tmp_path, capsys):
    cfg, backbone, eval_ids = setup
    out = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path, "recpie", seed=0)
    module = out["module"]
    assert out["ids"].tolist() == eval_ids["test"].tolist()
    assert np.all(out["ranks"] >= 1) and np.all(out["ranks"] <= nyc_data.num_pois)
    last = load_checkpoint(tmp_path / "checkpoints" / "recpie-seed0" / "last.ckpt", "test")
    assert last["recpie"]["policy_version"] == 1 + cfg.recpie.cycles * cfg.recpie.ppo_iterations  # SFT + PPO
    assert recorded_draw(last) == {"fraction": 1.0, "unit": "targets", "seed": 0}  # for a loader of its backbone
    lora = [p for n, p in module.explainer.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora), "LoRA B starts at zero: PPO/SFT must have moved it"
    assert not torch.equal(module.backbone.out_bias, backbone.out_bias), "the recommender must have trained"
    assert module.store.coverage("train") > 0 and all(len(t) == 1 for t in out["texts"].values())
    events = EventAccumulator(str(tmp_path / "tensorboard" / "recpie" / "seed0")).Reload()
    scalars, texts = set(events.Tags()["scalars"]), set(events.Tags()["tensors"])
    for key in ("ppo/kl_k1_per_seq", "ppo/clipfrac", "ppo/approx_kl", "ppo/ratio_mean", "reward/eos_rate",
                "reward/parse_rate", "reward/raw_mean", "reward/null_logp", "fusion/gate_mean", "val/mrr",
                "val_null/mrr", "val_other/mrr", "sft/loss", "train/loss_epoch", "speed/ppo_iteration_s",
                "speed/rollout_s", "speed/refresh_s"):
        assert key in scalars, key
    speeds = [e.value for e in events.Scalars("speed/rollout_tokens_per_s")]
    assert speeds and min(speeds) > 0, speeds
    assert {"explanations/rollout/text_summary", "explanations/val/text_summary"} <= texts
    # recpie.explained_share=0.5 (within the explained_draws bound here): 12 of the 24 rows per cycle are
    # pool draws, besides the refreshed samples' own rows: over 40% explained after null dropout (0.2);
    # the refresh budget alone would give 13%
    shares = [e.value for e in events.Scalars("train/explained_share")]
    assert min(shares) > 0.25, shares

    # disk cache keys: run, seed and config fingerprint, then the hash of the very prompt explained
    cached = [json.loads(line)["key"] for line in open(tmp_path / "expl" / "explanations.jsonl")]
    tag = f"{cfg.name}-seed0-{module.config_fingerprint()}/"
    assert cached and all(k.startswith(tag) for k in cached)
    i = int(out["ids"][0])
    prompt = build_prompt(nyc_data, "test", i, module.store.candidates["test"][i], cfg.explainer)
    assert any(k.startswith(f"{tag}test/{i}/0/{hashlib.sha1(prompt.encode()).hexdigest()[:12]}@") for k in cached)

    # `python -m recpie explain --run` reopens the trained run (config.yaml is what the runner writes)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    user = nyc_data.user_ids[int(nyc_data.user[nyc_data.splits["test"].target[0]])]
    assert main(["explain", user, "--run", str(tmp_path), "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"user {user}," in out and all(f"{r}. " in out for r in (1, 2, 3))


def test_control_needs_no_llm_and_checkpoints_hold_no_base_weights(setup, nyc_data, tmp_path):
    cfg, backbone, eval_ids = setup
    control = copy.deepcopy(cfg)
    control.recpie.use_explanations = False
    control.recpie.fusion_lr = 1e-3  # its own optimizer group: the fusion starts from scratch
    out = fit_variant(control, nyc_data, backbone, eval_ids, tmp_path, "control", seed=0)
    assert out["module"].explainer is None and out["explained"] == 0
    backbone_group, fusion_group = out["module"].configure_optimizers().param_groups
    assert (backbone_group["lr"], fusion_group["lr"]) == (cfg.recpie.rec_lr, 1e-3)
    assert {id(p) for p in fusion_group["params"]} == {id(p) for p in out["module"].fusion.parameters()}
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "control-seed0" / "last.ckpt", "test")
    assert all(k.startswith(("backbone.", "fusion.")) for k in ckpt["state_dict"])


def test_the_recommenders_weights_keep_their_checkpoint_names(setup, nyc_data):
    """The module holds backbone and fusion inside its recommender, yet reads and writes them as backbone.*
    and fusion.*, the names every checkpoint has."""
    cfg, backbone, eval_ids = setup
    cfg.recpie.use_explanations = False  # no LLM: the recommender's weights only
    module = RecPIEModule(cfg, nyc_data, copy.deepcopy(backbone), eval_ids, seed=0)
    module.configure_model()
    state = module.state_dict()
    assert set(state) == ({f"backbone.{k}" for k in backbone.state_dict()}
                          | {f"fusion.{k}" for k in module.fusion.state_dict()})
    moved = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(moved, strict=True)
    assert torch.equal(module.backbone.out_bias, moved["backbone.out_bias"])
    assert torch.equal(module.fusion.null, moved["fusion.null"])


def test_resumed_run_matches_uninterrupted(setup, nyc_data, tmp_path):
    cfg, backbone, eval_ids = setup
    whole = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path / "whole", "recpie", seed=0)
    first = copy.deepcopy(cfg)
    first.recpie.cycles = 1  # "interrupted" after the first cycle's checkpoint
    fit_variant(first, nyc_data, backbone, eval_ids, tmp_path / "split", "recpie", seed=0)
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoints" / "recpie-seed0" / "last.ckpt", "test")
    assert not any(".base_layer." in k or "embed_tokens" in k for k in ckpt["state_dict"]), "no frozen base"
    with pytest.raises(ValueError, match="another config"):
        other = copy.deepcopy(cfg)
        other.recpie.rollout_prompts = 3
        fit_variant(other, nyc_data, backbone, eval_ids, tmp_path / "split", "recpie", seed=0)
    resumed = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path / "split", "recpie", seed=0)
    np.testing.assert_allclose(resumed["ranks"], whole["ranks"], rtol=1e-5)
    assert resumed["module"].policy_version == whole["module"].policy_version

    # a finished run re-tested from its last checkpoint instead of the best: resumes (no training), and
    # the test sees the last checkpoint's weights
    folder = tmp_path / "whole" / "checkpoints" / "recpie-seed0"
    for choice, path in (("last", folder / "last.ckpt"), ("best", next(folder.glob("best-*.ckpt")))):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.recpie.test_checkpoint = choice
        out = fit_variant(run_cfg, nyc_data, backbone, eval_ids, tmp_path / "whole", "recpie", seed=0)
        saved = load_checkpoint(path, "test")["state_dict"]["backbone.out_bias"]
        assert torch.equal(out["module"].backbone.out_bias, saved), choice


def test_ddp_two_cpu_processes(tmp_path, nyc_datamodule_config, nyc_data, tiny_llm_dir):  # noqa: F811
    """Two gloo processes: gradients synced (identical LoRA and backbone), train explanations shared,
    rollouts drawn differently per rank, every test sample scored exactly once."""
    script = Path(__file__).parent / "scripts" / "ddp_recpie.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(tiny_llm_dir),
                           nyc_datamodule_config.cache_dir], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["test_ids"] == r0["expected_ids"] == r1["test_ids"]
    for key in ("lora", "backbone", "train_store", "coverage"):
        assert r0[key] == r1[key], key
    assert r0["coverage"] > 0
    assert r0["rollout_ids"] != r1["rollout_ids"]


def test_candidate_granularity_explains_each_of_the_top_k(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"explainer.granularity": "candidate", "recpie.cycles": 1})
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 8, cfg.recpie.subset_seed) for s in ("val", "test")}
    out = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path, "recpie", seed=0)
    store = out["module"].store
    assert all(len(texts) == cfg.explainer.num_candidates for texts in out["texts"].values())
    assert store.z["test"].shape[1] == cfg.explainer.num_candidates
    first = int(eval_ids["test"][0])
    shown = torch.tensor([store.candidates["test"][first]])
    prompts = out["module"].writer.prompts("test", torch.tensor([first]), shown)
    assert len(set(prompts)) == cfg.explainer.num_candidates  # one prompt about each candidate


def test_backbone_checkpoint_of_another_shape_is_a_clear_error(tmp_path, nyc_data, tiny_llm_dir):  # noqa: F811
    """A warm-start checkpoint from another backbone config fails before any training, naming the key."""
    from recpie.recipes.recpie import run

    cfg = small_cfg(tmp_path, tiny_llm_dir)
    other = Backbone(OmegaConf.merge(cfg.backbone, {"hidden_size": 8}), nyc_data, cfg.data.max_len)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in other.state_dict().items()}}, path)
    cfg.recpie.backbone_checkpoint = str(path)
    with pytest.raises(ValueError, match="recpie.backbone_checkpoint=.*does not fit this run's backbone"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_recipe_end_to_end_writes_results(tmp_path, nyc_data, tiny_llm_dir, capsys):  # noqa: F811
    """The `recpie` recipe as `make experiment` runs it: warm-up, control, RecPIE, tables and files."""
    from recpie.recipes.recpie import run

    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"recpie.cycles": 1, "run.fast": True, "train.fast_max_epochs": 1,
                                               "train.fast_limit_batches": 0.02})
    run(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert "RecPIE" in out and "control (null explanations)" in out and "excludes 0" in out
    assert "| another sample's explanation |" in out and "own minus another sample's: MRR" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())["per_seed"]
    assert set(results) == {"backbone (warm-up only)", "control (null explanations)", "RecPIE"}
    assert all(r[0]["n"] == 8 for r in results.values())
    md = (tmp_path / "run" / "results.md").read_text()
    assert "(none) in float32 (explainer.dtype=float32)," in md and "Machine: " in md  # the loaded model's dtype
    assert (tmp_path / "run" / "test_explanations_seed0.jsonl").read_text().count("\n") == 8
    with np.load(tmp_path / "run" / "test_ranks_seed0.npz", allow_pickle=False) as saved:
        assert set(saved.files) == {"ids", "backbone", "control", "recpie", "null", "other"}  # llm encoder: no verdict
        for key, name in (("recpie", "RecPIE"), ("backbone", "backbone (warm-up only)")):
            assert metrics_from_ranks(saved[key])["mrr"] == pytest.approx(results[name][0]["mrr"])
    for plot in ("attribution_seed0.png", "cycle_trends_seed0.png"):
        assert (tmp_path / "run" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


def test_recipe_with_the_recommenders_scores_in_the_prompt(tmp_path, nyc_data, tiny_llm_dir, capsys):  # noqa: F811
    """explainer.show_scores with the facts warm-up and verdicts, as nyc_recpie_3pct runs: the saved verdicts
    keep the logits of the candidates whose shares their prompts stated, and verdict_information's gate reads
    those prompts again."""
    from benchmarks.verdict_information import main as verdict_information
    from recpie.recipes.recpie import run

    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"recpie.cycles": 1, "run.fast": True, "train.fast_max_epochs": 1,
                                               "train.fast_limit_batches": 0.02, "explainer.show_scores": True,
                                               "explainer.encoder": "verdict", "recpie.sft_target": "facts"})
    run(cfg, tmp_path / "run")
    with np.load(tmp_path / "run" / "test_ranks_seed0.npz", allow_pickle=False) as saved:
        stored = (saved["candidates"] >= 0).all(1)
        assert saved["logits"].shape == saved["candidates"].shape and stored.all()
        assert (np.diff(saved["logits"], axis=1) <= 0).all()  # the top-K's logits, best first
    capsys.readouterr()
    OmegaConf.save(cfg, tmp_path / "run" / "config.yaml")  # what the command writes beside its results
    verdict_information([str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "Gate (test, 8 samples" in out
    # --against a twin whose every verdict is empty: its verdicts read as the rank + logit reader's
    twin = tmp_path / "twin"
    twin.mkdir()
    with np.load(tmp_path / "run" / "test_ranks_seed0.npz", allow_pickle=False) as saved:
        np.savez(twin / "test_ranks_seed0.npz", **{k: np.zeros_like(v) if k == "verdicts" else v
                                                   for k, v in saved.items()})
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in out.splitlines() if line.startswith("| ")}
    verdict_information([str(tmp_path / "run"), "--against", str(twin)])
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("Own verdicts beyond rank + logit"))
    assert f"MRR {rows['rank + logit']} -> {rows['rank + logit + own verdict']}, this run minus twin" in line
    with pytest.raises(SystemExit, match="missing"):
        verdict_information([str(tmp_path / "run"), "--against", str(tmp_path / "nothing")])


def test_kl_against_the_warmup_policy(setup, nyc_data, tmp_path):
    """rl.kl_reference=warmup: the reference is the policy frozen right after the format warm-up, so the
    first PPO iteration's rollout is at KL 0 from it (against the base it is not), the next one, after a
    PPO update, is not (the reference is a snapshot, not the live weights), and it is checkpointed."""
    cfg, backbone, eval_ids = setup
    kls = {}
    for reference in ("base", "warmup"):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.rl.kl_reference, run_cfg.recpie.cycles = reference, 2
        fit_variant(run_cfg, nyc_data, backbone, eval_ids, tmp_path / reference, "recpie", seed=0)
        events = EventAccumulator(str(tmp_path / reference / "tensorboard" / "recpie" / "seed0")).Reload()
        kls[reference] = [e.value for e in events.Scalars("ppo/kl_k1_per_seq")]
    assert abs(kls["warmup"][0]) < 1e-4 < abs(kls["base"][0])
    assert abs(kls["warmup"][1]) > 1e-5  # exactly 0.0 when the snapshot aliased the live weights
    ckpt = load_checkpoint(tmp_path / "warmup" / "checkpoints" / "recpie-seed0" / "last.ckpt", "test")
    assert ckpt["recpie"]["reference_weights"] and any("lora_B" in k for k in ckpt["recpie"]["reference_weights"])


def test_hindsight_warmup_and_verdict_fusion(tmp_path, nyc_data, tiny_llm_dir, monkeypatch):  # noqa: F811
    """recpie.sft_target=hindsight + explainer.encoder=verdict: the warm-up names each row's true next POI,
    on held-out samples only; explanations are stored as a verdict on their K candidates, which re-rank."""
    import recpie.rl.explainer_trainer as trainer_file
    from recpie.components.fusion import VerdictReranker

    liked = []
    template = trainer_file.templated_choice

    def recording(data, split, i, candidates, cfg, focus=None, like=None, dislike=None, logits=None):
        liked.append((i, like, list(candidates)))
        return template(data, split, i, candidates, cfg, focus, like, dislike, logits)

    monkeypatch.setattr(trainer_file, "templated_choice", recording)
    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"recpie.sft_target": "hindsight", "explainer.encoder": "verdict",
                                               "recpie.cycles": 1, "recpie.sft_batch": 4})
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 8, cfg.recpie.subset_seed) for s in ("val", "test")}
    out = fit_variant(cfg, nyc_data, backbone, eval_ids, tmp_path, "recpie", seed=0)
    module = out["module"]
    targets = nyc_data.poi[nyc_data.splits["train"].target]
    assert liked and all(like == targets[i] and like in cands for i, like, cands in liked)
    sft = set(module.sft_ids.tolist())
    assert {i for i, _, _ in liked} <= sft and not sft & set(module.store.texts["train"])
    assert isinstance(module.fusion, VerdictReranker) and module.store.dim == 2 * cfg.explainer.num_candidates
    # the fusion was fitted before the recommender's steps of the cycle, on the refreshed train samples
    assert module.fusion_fits and {f["cycle"] for f in module.fusion_fits} == {0}
    assert {"fusion/fit_rows", "fusion/fit_explained_rows"} <= set(module.fusion_fits[-1])
    verdicts = out["verdicts"]
    assert {"parsed", "like_is_top1", "like_is_target", "top1_is_target", "target_there_when_named"} <= set(verdicts)
    assert len(verdicts["named"]) == cfg.explainer.num_candidates
    saved = per_sample_verdicts(cfg, nyc_data, out)  # per sample, what the summary counts over the parsed ones
    liked = saved["liked_target"]
    assert liked.shape == (8,) and liked.sum() == pytest.approx(verdicts["like_is_target"]
                                                                * verdicts["target_among_candidates"])
    assert saved["verdicts"].shape == (8, cfg.explainer.num_candidates, 2)
    assert saved["candidates"].tolist() == [module.store.candidates["test"][int(i)] for i in out["ids"]]
    val = per_sample_verdicts(cfg, nyc_data, out, "val", eval_ids["val"].numpy())  # the gate's input
    assert val["verdicts"].shape == (8, cfg.explainer.num_candidates, 2)
    assert val["candidates"].tolist() == [module.store.candidates["val"][int(i)] for i in eval_ids["val"]]
    control = copy.deepcopy(cfg)  # the same re-ranking fusion, fed the null verdict only
    control.recpie.use_explanations = False
    out = fit_variant(control, nyc_data, backbone, eval_ids, tmp_path, "control", seed=0)
    assert isinstance(out["module"].fusion, VerdictReranker) and out["verdicts"]["parsed"] == 0
    assert [f["cycle"] for f in out["module"].fusion_fits] == [0]  # the control fits its null path too
    assert out["module"].fusion_fits[0]["fusion/fit_explained_rows"] == 0
    from recpie.recipes.recpie import run

    for key, value in (("recpie.sft_target", "hindsight"), ("explainer.encoder", "verdict")):
        with pytest.raises(ConfigError, match=f"{key}={value} .*granularity=user"):  # when the config loads
            small_cfg(tmp_path / "bad", tiny_llm_dir, **{key: value, "explainer.granularity": "candidate"})
        bad = small_cfg(tmp_path / "bad", tiny_llm_dir)  # a config changed after loading: the recipe checks again
        OmegaConf.update(bad, key, value)
        bad.explainer.granularity = "candidate"
        with pytest.raises(ConfigError, match=f"{key}={value} .*granularity=user"):
            run(bad, tmp_path / "bad" / "run")  # before the backbone's warm-up
        assert not (tmp_path / "bad" / "run" / "tensorboard").exists()


def test_the_verdict_fusion_fitted_on_val_explains_val_first_and_scores_val_out_of_fold(tmp_path, nyc_data,
                                                                                         tiny_llm_dir):  # noqa: F811
    """recpie.fusion_fit_split=val: fit_fusion explains the val samples the run scores with the current
    policy and fits on them; val rows are then scored by the weights fitted without their fold, test rows by
    the all-rows fit."""
    cfg = small_cfg(tmp_path, tiny_llm_dir, **{"explainer.encoder": "verdict", "recpie.fusion_fit_split": "val",
                                               "recpie.val_samples": 64})
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, nyc_data, cfg.data.max_len)
    eval_ids = {s: subset_ids(len(nyc_data.splits[s]), 64, cfg.recpie.subset_seed) for s in ("val", "test")}
    module = RecPIEModule(cfg, nyc_data, backbone, eval_ids, seed=0)
    module.configure_model()
    asked = []

    def first_candidate_liked(prompts, keys, states, version):  # parseable verdicts from the tiny model's prompts
        asked.extend(keys)
        first = [re.search(r"\n1\. (.*), \d+\.\d km", p)[1] for p in prompts]
        return [f"may like: {label} / may not like: nothing of it" for label in first]

    module.explainer.explain = first_candidate_liked
    module.fit_fusion()
    store = module.store
    assert len(asked) == 64 and store.present["val"][eval_ids["val"]].all() and not store.present["train"].any()
    fit = module.fusion_fits[-1]
    batch = module.writer.batch("val", eval_ids["val"])
    _, candidates = module.predict(batch)
    inside = int((candidates == module.recommender.target(batch)[:, None]).any(1).sum())
    assert inside > 0 and fit["fusion/fit_rows"] == 2 * inside and fit["fusion/fit_explained_rows"] == inside
    assert module.fusion.weight.abs().sum() > 0
    ids = eval_ids["val"]
    assert module.fitted_ids("val", ids) is ids and module.fitted_ids("test", ids) is None
    assert module.fitted_ids("train", ids) is None
