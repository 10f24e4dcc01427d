"""Issue 14, items 5 and 6: every bad value fails when the config is loaded, before any data is read, and
the command line prints ``error: <message>`` (exit 2) instead of a traceback (``--debug`` shows it)."""
from __future__ import annotations

import pytest

from recpie.cli import main
from recpie.config import load_experiment
from recpie.config_checks import RANGES, check_section
from recpie.data.config import DataConfig, Source
from recpie.errors import ConfigError

# (override, words the message must contain): the cases first, then one per kind of rule
BAD_VALUES = [
    ("data.max_len=0", "data.max_len=0"),  # looped forever in train_windows
    ("data.batch_size=0", "data.batch_size"),
    ("data.eval_batch_size=-3", "data.eval_batch_size"),
    ("backbone.hidden_size=0", "backbone.hidden_size"),
    ("data.min_poi_checkins=-1", "data.min_poi_checkins"),
    ("data.min_user_checkins=-5", "data.min_user_checkins"),
    ("train.max_epochs=-1", "train.max_epochs"),
    ("run.seeds=[]", "run.seeds=[] is empty"),  # exited 0 with a row of nan
    ("run.seeds=[-1]", "run.seeds"),
    ("explainer.granularity=poi", "'explainer.granularity': Invalid value 'poi', expected one of [user, candidate]"),
    ("explainer.quantization=int8", "explainer.quantization"),
    ("explainer.device=tpu", "explainer.device"),
    ("explainer.dtype=int4", "explainer.dtype"),
    ("explainer.encoder=embedded:bert", "explainer.encoder"),
    ("explainer.model=embedded:llama", "explainer.model"),
    ("explainer.model=/nonexistent/gemma.gguf", "GGUF file not found"),
    ("explainer.encoder=/nonexistent/minilm", "local sentence-transformers directory"),
    ("recpie.sft_target=oracle", "recpie.sft_target"),
    ("rl.kl_reference=sft", "rl.kl_reference"),
    ("rl.estimator=ppo", "rl.estimator"),
    ("recpie.test_checkpoint=first", "recpie.test_checkpoint"),
    ("data.source=yelp", "data.source"),
    ("data.encoding=ascii", "data.encoding"),
    ("data.session_gap_hours=0", "data.session_gap_hours"),
    ("data.val_cut=0.95", "val_cut"),
    ("backbone.num_heads=3", "multiple of backbone.num_heads=3"),
    ("backbone.dropout=1.0", "backbone.dropout"),
    ("backbone.copy_decays=[0.9,1.5]", "backbone.copy_decays"),
    ("train.lr=0", "train.lr"),
    ("train.fast_limit_batches=0", "train.fast_limit_batches"),
    ("baselines.decay_grid=[]", "baselines.decay_grid"),
    ("eval.topk=0", "eval.topk"),
    ("eval.bootstrap_level=1.0", "eval.bootstrap_level"),
    ("explainer.num_candidates=0", "explainer.num_candidates"),
    ("explainer.temperature=0", "explainer.temperature"),
    ("explainer.vocabulary=tiny", "explainer.vocabulary"),
    ("explainer.logprob_attention=flash", "explainer.logprob_attention"),
    ("data.train_fraction=0", "data.train_fraction"),
    ("data.train_fraction=1.2", "data.train_fraction"),
    ("data.train_fraction_unit=rows", "data.train_fraction_unit"),
    ("efficiency.fractions=[0.1,0]", "efficiency.fractions"),
    ("efficiency.bound_test_samples=-1", "efficiency.bound_test_samples"),
    ("rl.minibatch_size=0", "rl.minibatch_size"),
    ("rl.gamma=1.5", "rl.gamma"),
    ("rl.kl.horizon=0", "rl.kl.horizon"),
    ("recpie.cycles=0", "recpie.cycles"),
    ("recpie.null_dropout=2", "recpie.null_dropout"),
    ("recpie.sft_share=1", "recpie.sft_share"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("run.recipe=train", "run.recipe"),
    ("data.max_len=1.5", "data.max_len"),  # not an integer: the typed schema refuses it
    ("data.num_workers=-1", "data.num_workers"),
    ("data.min_trajectory_len=0", "data.min_trajectory_len"),
    ("data.on_bad_line=ignore", "data.on_bad_line"),
    ("data.train_targets=some", "data.train_targets"),
    ("backbone.num_layers=0", "backbone.num_layers"),
    ("backbone.geo=hex", "backbone.geo"),
    ("backbone.fourier_bands=0", "backbone.fourier_bands"),
    ("backbone.grid_cells=0", "backbone.grid_cells"),
    ("backbone.copy_bandwidths_h=[0]", "backbone.copy_bandwidths_h"),
    ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.patience=-1", "train.patience"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.label_smoothing=1", "train.label_smoothing"),
    ("eval.chunk_size=0", "eval.chunk_size"),
    ("eval.activity_bins=0", "eval.activity_bins"),
    ("eval.bootstrap_samples=0", "eval.bootstrap_samples"),
    ("explainer.lora.rank=0", "explainer.lora.rank"),
    ("explainer.soft_tokens=-1", "explainer.soft_tokens"),
    ("explainer.max_new_tokens=0", "explainer.max_new_tokens"),
    ("rl.ppo_epochs=0", "rl.ppo_epochs"),
    ("explainer.forward_tokens=0", "explainer.forward_tokens"),
    ("rl.cliprange=0", "rl.cliprange"),
    ("rl.kl.init_coef=-1", "rl.kl.init_coef"),
    ("recpie.rec_steps_per_cycle=0", "recpie.rec_steps_per_cycle"),
    ("recpie.batch_size=0", "recpie.batch_size"),
    ("recpie.val_samples=-1", "recpie.val_samples"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps"),
]
COMBINATIONS = [
    (["rl.estimator=grpo", "rl.group_size=1"], "rl.group_size=1 must be >= 2"),
    (["recpie.sft_target=hindsight", "explainer.granularity=candidate"], "needs explainer.granularity=user"),
    (["explainer.encoder=verdict", "explainer.granularity=candidate"], "needs explainer.granularity=user"),
    (["backbone.copy_full_history=true", "data.history_summary=false"], "data.history_summary"),
    (["run.fast=true", "train.max_epochs=30"], "run.fast=true replaces train.max_epochs"),
    (["run.fast=true", "run.seeds=[0,1]"], "run.fast=true replaces run.seeds"),
    (["explainer.static_cache=true", "explainer.vocabulary=data"], "set explainer.vocabulary=full"),
]


@pytest.mark.parametrize(("override", "words"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_fails_at_load_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_experiment("nyc_recpie", [override])
    assert words in str(err.value)


@pytest.mark.parametrize(("overrides", "words"), COMBINATIONS, ids=[" ".join(o) for o, _ in COMBINATIONS])
def test_bad_combination_fails_at_load(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_experiment("nyc_recpie", overrides)
    assert words in str(err.value)


def test_every_rule_names_a_real_key_and_the_defaults_pass():
    cfg = load_experiment("nyc_recpie", ["run.fast=true"])  # fast alone is fine: it says what it replaces
    for key in RANGES:
        node = cfg
        for part in key.split("."):
            node = node[part]  # KeyError for a rule about a key that does not exist


def test_a_mode_set_in_code_is_checked_against_its_enum():
    with pytest.raises(ConfigError, match="data.source=.yelp. is unknown; use one of foursquare, gowalla, google_"):
        check_section(DataConfig(source="yelp"), "data")
    check_section(DataConfig(source="gowalla"), "data")  # a plain string naming a member is fine
    cfg = load_experiment("nyc_baselines", ["data.source=gowalla"])
    assert cfg.data.source is Source.gowalla and cfg.data.source == "gowalla"


def test_cli_prints_one_error_line_and_exits_2_before_reading_data(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RECPIE_DEBUG", raising=False)
    args = ["nyc_baselines", f"run.output_dir={tmp_path}", "data.data_root=/nonexistent"]
    for command in (["run", *args, "data.max_len=0"], ["data", "stats", *args, "data.batch_size=0"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "data." in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written for a refused config"
    with pytest.raises(ConfigError):
        main(["run", *args, "data.max_len=0", "--debug"])
    monkeypatch.setenv("RECPIE_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["run", *args, "data.max_len=0"])


def test_missing_data_is_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["data", "stats", "nyc_baselines", f"data.data_root={tmp_path}"]) == 2
    assert "error: " in capsys.readouterr().err
