"""Issue 26, class 4: what can be checked once the data's size is known is checked then, before any training
(recpie/cli/preflight.py): keys that count POIs within the POI count, at least one kept train target, the
GPUs the trainer asks for, the explainer's model and LoRA targets; and counts get sane upper bounds.

The data is the small TSMC2014 file of tests/tsmc_synthetic.py (real NYC venues: 6 POIs, 12 users).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Gemma3TextConfig
from tsmc_synthetic import write_tsmc

from recpie.cli import main
from recpie.cli.explain import explain_main
from recpie.cli.preflight import check_before_training
from recpie.config import load_experiment
from recpie.errors import ConfigError, DataError, InputError
from recpie.explainer.config import ExplainerConfig, LoraSection
from recpie.explainer.model_check import check_llm


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """A data root holding the synthetic file where the foursquare source looks for it."""
    root = tmp_path_factory.mktemp("small-root")
    write_tsmc(root / "foursquare_nyc_tsmc2014")
    return root


def _overrides(root: Path) -> list[str]:
    return [f"data.data_root={root}", "data.names_file=", f"data.cache_dir={root / 'cache'}",
            "data.min_poi_checkins=1", "data.min_user_checkins=1", "eval.topk=5"]


@pytest.mark.parametrize(("overrides", "words"), [
    (["eval.topk=7"], "eval.topk=7 is more than the 6 POIs of foursquare:NYC"),  # was "selected index k out of range"
    (["eval.topk=1000"], "set it to at most 6"),
    (["explainer.num_candidates=7"], "explainer.num_candidates=7 is more than the 6 POIs"),
])
def test_counts_above_the_poi_count_fail_before_training(small_root, overrides, words):
    cfg = load_experiment("nyc_recpie", _overrides(small_root) + overrides)
    with pytest.raises(ConfigError, match=words):
        check_before_training(cfg)


@pytest.mark.parametrize(("name", "overrides", "words"), [
    ("nyc_baselines", ["data.train_fraction=0.000001"], "data.train_fraction: a fraction of 1e-06 (unit targets"),
    ("nyc_baselines", ["data.train_fraction=0.001", "data.train_fraction_unit=users"],
     "unit users, seed 0) keeps none"),
    ("nyc_data_efficiency", ["efficiency.fractions=[0.5,0.0001]"], "efficiency.fractions (0.0001): a fraction of"),
])
def test_a_fraction_that_keeps_no_target_fails_before_training(small_root, name, overrides, words):
    """It trained every model on nothing and exited 0."""
    cfg = load_experiment(name, _overrides(small_root) + overrides)
    with pytest.raises(DataError) as err:
        check_before_training(cfg)
    assert words in str(err.value) and "train targets of foursquare:NYC: raise it" in str(err.value)


def test_the_sizes_that_fit_pass(small_root):
    check_before_training(load_experiment("nyc_baselines", _overrides(small_root) + ["eval.topk=6"]))
    check_before_training(load_experiment("nyc_data_efficiency", _overrides(small_root)))


def test_cli_refuses_before_any_training(small_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "nyc_baselines", *_overrides(small_root), "eval.topk=7", f"run.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval.topk=7 is more than the 6 POIs") and err.count("\n") == 1
    # only what the run-folder check writes (recpie/utils/run_folder.py, provenance.py): no checkpoint, no log
    assert {p.name for p in (out / "nyc_baselines").iterdir()} <= {"config.yaml", "provenance.json", ".recpie.lock"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for more GPUs than a CPU machine has")
@pytest.mark.parametrize("trainer", [["trainer.accelerator=gpu"], ["trainer.accelerator=cuda", "trainer.devices=2"],
                                     ["trainer.accelerator=gpu", "trainer.devices=0,3"]])
def test_gpus_the_machine_lacks_fail_before_the_data(small_root, trainer):
    cfg = load_experiment("nyc_baselines", _overrides(small_root) + trainer)  # a config may still be printed
    with pytest.raises(ConfigError, match="this machine has 0 GPU"):
        check_before_training(cfg)


@pytest.mark.parametrize(("override", "words"), [
    ("eval.bootstrap_samples=1000000000", "eval.bootstrap_samples=1000000000: every value must be a number in "
                                          "[1, 1000000]"),
    ("eval.bootstrap_samples=1000001", "eval.bootstrap_samples"),
    ("explainer.max_new_tokens=1000000", "explainer.max_new_tokens=1000000: every value must be a number in "
                                         "[1, 2048]"),
    ("explainer.num_candidates=101", "explainer.num_candidates=101"),
])
def test_counts_have_upper_bounds(override, words):
    with pytest.raises(ConfigError) as err:
        load_experiment("nyc_recpie", [override])
    assert words in str(err.value)


@pytest.mark.parametrize(("model", "words"), [
    ("/nonexistent/gemma", "/nonexistent/gemma does not exist"),
    ("./no/such/model", "no/such/model does not exist"),
    ("~/no-such-model-folder", "no-such-model-folder does not exist"),
    ("{tmp}", "holds no config.json, so it is not a Hugging Face model folder"),
    ("{tmp}/weights.bin", "is a file, not a model folder"),
    ("{tmp}/broken", "the config of"),
])
def test_a_wrong_model_path_is_one_line_naming_key_and_path(tmp_path, model, words):
    """It surfaced after the backbone warm-up as transformers' traceback blaming the internet connection."""
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "gemma3_text", "hidden_size": ')
    with pytest.raises(ConfigError) as err:
        check_llm(ExplainerConfig(model=model.format(tmp=tmp_path)))
    message = str(err.value)
    assert message.startswith(f"explainer.model={model.format(tmp=tmp_path)!r}: ") and words in message
    assert "\n" not in message and "connect" not in message


@pytest.fixture(scope="module")
def gemma_config_dir(tmp_path_factory) -> Path:
    """A model folder with only the config.json of a 2-layer Gemma 3: all the check reads (no weights)."""
    folder = tmp_path_factory.mktemp("gemma-config")
    Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=32).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("targets", [["q_proj", "qproj"], ["nothing"], ["q_proj", "v_proj", "mlp.up"]])
def test_lora_targets_that_name_no_module_are_refused(gemma_config_dir, targets):
    """peft failed only when no target matched; a misspelt one beside good ones was dropped in silence."""
    cfg = ExplainerConfig(model=str(gemma_config_dir), lora=LoraSection(target_modules=targets))
    with pytest.raises(ConfigError, match=r"explainer.lora.target_modules: \[.*\] name no module of") as err:
        check_llm(cfg)
    assert "q_proj" in str(err.value).split("its projections:")[1]
    check_llm(ExplainerConfig(model=str(gemma_config_dir), lora=LoraSection(target_modules=[
        "q_proj", "self_attn.k_proj", "layers.0.mlp.down_proj"])))  # peft's suffix rule: these match


def test_recpie_run_checks_its_llm_before_training(small_root):
    cfg = load_experiment("nyc_recpie", _overrides(small_root) + ["explainer.model=/nonexistent/gemma"])
    with pytest.raises(ConfigError, match="explainer.model='/nonexistent/gemma': /nonexistent/gemma does not exist"):
        check_before_training(cfg)


@pytest.mark.parametrize(("args", "words"), [
    (["--k", "101"], "not in [1, 100] (the range of explainer.num_candidates)"),
    (["--max-new-tokens", "1000000"], "not in [1, 2048] (the range of explainer.max_new_tokens)"),
])
def test_explain_flags_have_upper_bounds(args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        explain_main(["470", *args])
    assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_explain_k_above_the_poi_count(small_root):
    with pytest.raises(InputError, match="--k 7 is more than the 6 POIs of foursquare:NYC"):
        explain_main(["100", "--k", "7", "--data-root", str(small_root)])
