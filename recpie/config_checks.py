"""The one place config values are checked: ranges, enumerations and combinations of keys.

The rules live here, at the bottom of the layers, so that library code taking a config section (the data
resolver, the LLM loader, the KL controller...) checks it with ``check_section`` / ``check_choice``: a
value has one rule and one message, which names the key and what to set instead. ``recpie.config.validate``
applies every rule to a whole experiment config when it is loaded, so a bad value fails before any data
is read or any model warms up.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from recpie.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def _ge(lo: float) -> Rule:
    return (lambda v: v >= lo), f">= {lo}"


def _gt(lo: float) -> Rule:
    return (lambda v: v > lo), f"> {lo}"


def _within(lo: float, hi: float, open_lo: bool = False, open_hi: bool = False) -> Rule:
    text = f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
    return (lambda v: (lo < v if open_lo else lo <= v) and (v < hi if open_hi else v <= hi)), text


DECAY = _within(0, 1, open_lo=True)
SHARE = _within(0, 1)
# Numeric keys. A list value must be non-empty and every element must pass; None means "the source's
# default" (data thresholds) and is checked once resolved.
RANGES: dict[str, Rule] = {
    "run.seeds": _ge(0),
    "trainer.num_nodes": _ge(1), "trainer.log_every_n_steps": _ge(1),
    "data.min_poi_checkins": _ge(1), "data.min_user_checkins": _ge(1), "data.session_gap_hours": _gt(0),
    "data.min_trajectory_len": _ge(1), "data.max_len": _ge(1), "data.batch_size": _ge(1),
    "data.eval_batch_size": _ge(1), "data.num_workers": _ge(0),
    "data.train_fraction": _within(0, 1, open_lo=True), "data.train_fraction_seed": _ge(0),
    "backbone.hidden_size": _ge(1), "backbone.num_layers": _ge(1), "backbone.num_heads": _ge(1),
    "backbone.dropout": _within(0, 1, open_hi=True), "backbone.fourier_bands": _ge(1),
    "backbone.grid_cells": _ge(1), "backbone.copy_decays": DECAY, "backbone.copy_bandwidths_h": _gt(0),
    "backbone.copy_kernel_decay": DECAY, "backbone.copy_time_scales_days": _gt(0),
    "backbone.copy_log_scales": _gt(0),
    "train.lr": _gt(0), "train.weight_decay": _ge(0), "train.max_epochs": _ge(1), "train.patience": _ge(0),
    "train.grad_clip": _ge(0), "train.label_smoothing": _within(0, 1, open_hi=True),
    "train.trajectory_end_weight": _ge(0), "train.new_poi_weight": _ge(0), "train.fast_max_epochs": _ge(1),
    "train.fast_limit_batches": _within(0, 1, open_lo=True), "train.steps_per_epoch": _ge(0),
    "train.warmup_steps": _ge(0), "train.decay_steps": _ge(0), "train.min_lr_ratio": SHARE,
    "baselines.counter_decay": DECAY, "baselines.decay_grid": DECAY, "baselines.bandwidth_grid_h": _gt(0),
    "eval.topk": _ge(1), "eval.chunk_size": _ge(1), "eval.activity_bins": _ge(1),
    # 10^9 bootstrap resamples ground for hours after training
    "eval.bootstrap_samples": _within(1, 1_000_000), "eval.bootstrap_level": _within(0, 1, True, True),
    "explainer.lora.rank": _ge(1), "explainer.lora.alpha": _gt(0), "explainer.lora.dropout": _within(0, 1, False, True),
    "explainer.soft_tokens": _ge(0), "explainer.soft_hidden": _ge(1), "explainer.history_len": _ge(1),
    # a prompt lists every candidate (~20 tokens each); explanations take 25-85 tokens
    "explainer.num_candidates": _within(1, 100), "explainer.max_new_tokens": _within(1, 2048),
    "explainer.temperature": _gt(0), "explainer.depart_margin": _ge(0),
    "explainer.encoder_max_tokens": _ge(1), "explainer.forward_tokens": _ge(1),
    "rl.group_size": _ge(1), "rl.ppo_epochs": _ge(1), "rl.minibatch_size": _ge(1), "rl.cliprange": _gt(0),
    "rl.lr": _ge(0), "rl.cliprange_value": _gt(0), "rl.vf_coef": _ge(0), "rl.gamma": SHARE, "rl.lam": SHARE,
    "rl.kl.init_coef": _ge(0), "rl.kl.target": _gt(0), "rl.kl.horizon": _ge(1),
    "rl.reward.clip": _ge(0), "rl.reward.std_floor": _ge(0),
    "recpie.cycles": _ge(1), "recpie.rec_steps_per_cycle": _ge(1), "recpie.ppo_iterations": _ge(0),
    "recpie.refresh_budget": _ge(0), "recpie.null_dropout": SHARE,
    "recpie.rollout_prompts": _ge(2),  # the reward compares a sample's explanation with another sample's
    "recpie.explained_share": SHARE, "recpie.explained_draws": _ge(0), "recpie.sft_steps": _ge(0),
    "recpie.sft_batch": _ge(1), "recpie.sft_share": _within(0, 1, True, True), "recpie.rec_lr": _gt(0),
    "recpie.fusion_lr": _gt(0), "recpie.llm_lr": _gt(0), "recpie.grad_clip": _ge(0),
    "recpie.batch_size": _ge(1), "recpie.generation_batch": _ge(1), "recpie.val_samples": _ge(0),
    "recpie.test_samples": _ge(0), "recpie.sft_choice_weight": _ge(0), "recpie.fusion_ridge": _gt(0),
    "recpie.fusion_folds": _ge(2), "recpie.sft_eval_every": _ge(0), "recpie.sft_eval_samples": _ge(1),
    "efficiency.fractions": _within(0, 1, open_lo=True), "efficiency.bound_val_samples": _ge(0),
    "efficiency.bound_test_samples": _ge(0),
}
# keys that count POIs: each must be within the data's POI count, known once the data is loaded (check_sizes)
POI_COUNTS = ("eval.topk", "explainer.num_candidates")
# what Lightning's Trainer takes (its registries, lightning 2.6; tests/test_one_line_errors.py compares them),
# of which the strategies this project runs (its DDP exchange of explanations and evaluation samples)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "ddp_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
              "ddp_spawn_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
              "ddp_fork_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true",
              "ddp_notebook_find_unused_parameters_false")
# trainer.devices: "auto", a count, -1 (every GPU), or GPU indices "0,2" (Lightning's string forms)
DEVICES = re.compile(r"auto|-1|[1-9][0-9]*|([0-9]+,)+[0-9]*")
# run.fast replaces these keys' values (key -> (what replaces it, its value)); an explicit override of one
# of them to another value together with fast is refused
FAST_OVERRIDES = {"train.max_epochs": ("train.fast_max_epochs", lambda cfg: cfg.train.fast_max_epochs),
                  "run.seeds": ("[0]", lambda cfg: [0])}


def value_at(cfg: Any, dotted: str) -> Any:
    """The value at ``dotted`` of a DictConfig or dataclass; AttributeError when a section is absent."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def plain_value(value: Any) -> Any:
    return list(value) if isinstance(value, Iterable) and not isinstance(value, str) else value


def check_choice(key: str, value: Any, choices: type[StrEnum]) -> StrEnum:
    """``value`` as a member of the mode's enum (the typed config's field type), or a ConfigError naming
    the key and the allowed values."""
    try:
        return choices(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(choices)}") from None


def _modes(section: Any) -> dict[str, type[StrEnum]]:
    """The fields of a config dataclass typed as a mode enum."""
    if not dataclasses.is_dataclass(section):
        return {}
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], StrEnum)}


def check_value(key: str, value: Any) -> None:
    """One numeric key against its range; lists element by element."""
    ok, text = RANGES[key]
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    if not values:
        raise ConfigError(f"{key}=[] is empty; give at least one value ({text})")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
            raise ConfigError(f"{key}={value!r}: every value must be a number {text}")


def check_section(cfg: Any, prefix: str) -> None:
    """Every rule under ``prefix`` (e.g. "data") on ``cfg``, that section alone (a dataclass or DictConfig)."""
    for key in RANGES:
        if key.startswith(prefix + "."):
            value = value_at(cfg, key.removeprefix(prefix + "."))
            if value is not None:
                check_value(key, value)
    # a DictConfig's modes were checked against their enums when it was merged; a dataclass built in
    # code may hold any string
    for name, choices in _modes(cfg).items():
        check_choice(f"{prefix}.{name}", getattr(cfg, name), choices)
    if prefix == "trainer":
        check_trainer(cfg)
    if prefix == "data" and not 0.0 < cfg.val_cut <= cfg.test_cut < 1.0:
        raise ConfigError(f"data.val_cut={cfg.val_cut}, data.test_cut={cfg.test_cut}: "
                          "need 0 < val_cut <= test_cut < 1")


def check_decoding(explainer: Any) -> None:
    """The static cache decodes through transformers' generate, whose head is the whole vocabulary."""
    if explainer.vocabulary == "data" and explainer.static_cache:
        raise ConfigError("explainer.static_cache=true decodes through transformers' generate, whose head is the "
                          "whole vocabulary: set explainer.vocabulary=full (or static_cache=false)")


def check_explanation_modes(cfg: Any) -> None:
    """Modes that are about one user-level explanation naming one of the K candidates."""
    for key in ("recpie.sft_target", "explainer.encoder"):
        value = value_at(cfg, key)
        if value in ("hindsight", "facts", "verdict") and cfg.explainer.granularity != "user":
            raise ConfigError(f"{key}={value} is about one user-level explanation naming one of the K "
                              "candidates: it needs explainer.granularity=user")
    if cfg.explainer.choice != "generated":
        if cfg.explainer.granularity != "user":
            raise ConfigError(f"explainer.choice={cfg.explainer.choice} chooses one of the K candidates for one "
                              "user-level explanation: it needs explainer.granularity=user")
        if cfg.recpie.ppo_iterations > 0 and cfg.rl.estimator == "gae":
            raise ConfigError(f"rl.estimator=gae with explainer.choice={cfg.explainer.choice}: a K-way choice is one "
                              "action per rollout row, with no tokens for a value head to read; use rl.estimator="
                              "rloo, grpo or expected")
    elif cfg.recpie.ppo_iterations > 0 and cfg.rl.estimator == "expected":
        raise ConfigError("rl.estimator=expected rewards every one of a K-way choice's K actions: it needs "
                          "explainer.choice=scored or readout (a generated text's actions are its tokens: use rloo, "
                          "grpo or gae)")
    if cfg.rl.trainable == "head" and (cfg.explainer.choice != "readout" or cfg.rl.estimator != "expected"):
        raise ConfigError(f"rl.trainable=head steps the readout choice's head alone on line states computed "
                          f"once per prompt: it needs explainer.choice=readout (it is {cfg.explainer.choice}) "
                          f"and rl.estimator=expected (it is {cfg.rl.estimator}); or set rl.trainable=all")
    if cfg.explainer.choice != "readout" and list(cfg.explainer.readout_layers) != [-1]:
        raise ConfigError(f"explainer.readout_layers={list(cfg.explainer.readout_layers)} is read only by the "
                          f"readout choice's head: set explainer.choice=readout (it is {cfg.explainer.choice}), or "
                          "leave explainer.readout_layers at [-1]")
    if cfg.explainer.choice == "generated" and cfg.explainer.depart_margin != 0:
        raise ConfigError(f"explainer.depart_margin={cfg.explainer.depart_margin} is a margin in the K-way choice's "
                          "log pi, which a generated text does not have: set explainer.choice=scored or readout, or "
                          "leave explainer.depart_margin at 0")
    if cfg.recpie.sft_eval_every > 0 and cfg.explainer.granularity != "user":
        raise ConfigError(f"recpie.sft_eval_every={cfg.recpie.sft_eval_every}: the warm-up curve asks whether one "
                          "user-level explanation names the teacher's top-1 of the K candidates: it needs "
                          "explainer.granularity=user (or recpie.sft_eval_every=0)")


def _one_of(key: str, value: Any, allowed: tuple[str, ...], unknown: str = "is unknown") -> None:
    if str(value) not in allowed:
        raise ConfigError(f"{key}={value!r} {unknown}; use one of {', '.join(allowed)}")


def check_trainer(trainer: Any) -> None:
    """The trainer section against what Lightning takes, so that a bad value is this one line at load and not
    Lightning's traceback after the data is read. What only the machine knows (no GPU for accelerator=gpu)
    is check_machine's, when a run starts; Lightning's MisconfigurationException, should it still come, is one
    error line too (recpie.errors.FOREIGN_USER_ERRORS)."""
    _one_of("trainer.accelerator", trainer.accelerator, ACCELERATORS)
    _one_of("trainer.precision", trainer.precision, PRECISIONS)
    _one_of("trainer.strategy", trainer.strategy, STRATEGIES, "is not a strategy this project runs")
    devices = str(trainer.devices).replace(" ", "").strip("[]")
    if not DEVICES.fullmatch(devices):
        raise ConfigError(f"trainer.devices={trainer.devices!r}: use auto, a number of devices (1, 2, ...), -1 for "
                          "every GPU, or GPU indices such as '0,2'")
    if trainer.accelerator == "cpu" and not (devices == "auto" or devices.isdigit()):
        raise ConfigError(f"trainer.devices={trainer.devices!r} with trainer.accelerator=cpu: on a CPU it counts "
                          "processes; use a number (1, 2, ...) or auto")
    if trainer.accelerator == "auto" and not (devices == "auto" or devices.isdigit()):
        import torch  # only here: the rules above need no torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.devices={trainer.devices!r} names GPUs, but trainer.accelerator=auto finds no "
                              "GPU here (it runs on the CPU): use a number of processes (1, 2, ...) or auto")
    if trainer.accelerator == "tpu" and importlib.util.find_spec("torch_xla") is None:
        raise ConfigError("trainer.accelerator=tpu needs torch_xla, which is not installed; use cpu, gpu or auto")


def check_machine(trainer: Any) -> None:
    """What this machine must have for the trainer section (asked when a run starts, not when a config is only
    loaded or printed): the GPUs that trainer.accelerator and trainer.devices name."""
    import torch  # only here: the config rules need no torch

    if trainer.accelerator not in ("gpu", "cuda"):
        return
    count = torch.cuda.device_count()
    devices = str(trainer.devices).replace(" ", "").strip("[]")
    if devices in ("auto", "-1"):
        wanted = 1
    elif devices.isdigit():
        wanted = int(devices)
    else:  # GPU indices such as "0,2": the highest must exist
        wanted = max(int(i) for i in devices.split(",") if i) + 1
    if count < wanted:
        raise ConfigError(f"trainer.accelerator={trainer.accelerator} trainer.devices={trainer.devices!r}: this "
                          f"machine has {count} GPU(s) visible to torch; set trainer.accelerator=cpu or auto, or "
                          "fewer devices")


def check_sizes(cfg: Any, num_pois: int, data_name: str) -> None:
    """The keys that count POIs (POI_COUNTS) against the data's POI count, once the data is loaded and before
    any training: a top-K above it failed after the warm-up ("selected index k out of range")."""
    for key in POI_COUNTS:
        value = value_at(cfg, key)
        if value > num_pois:
            raise ConfigError(f"{key}={value} is more than the {num_pois} POIs of {data_name} after preprocessing: "
                              f"set it to at most {num_pois}")
