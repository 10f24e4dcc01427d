"""The experiment config: one typed section per concern, each documented where it is defined.

- ``run``      what runs and where it writes (this file)
- ``trainer``  Lightning Trainer settings: devices, strategy, precision (this file)
- ``data``     check-in source and preprocessing protocol (recpie/data/config.py)
- ``backbone`` the recommender network; ``train`` how it is fitted; ``baselines`` the simple models
               (recpie/components/config.py)
- ``eval``     the evaluator: top-K export, breakdowns, bootstrap (recpie/evaluation/config.py)
- ``explainer`` the LLM, LoRA, soft prompt, prompts and encoder (recpie/explainer/config.py)
- ``rl``       PPO and the advantage estimators (recpie/rl/config.py)
- ``recpie``   the joint schedule, fusion and reward (recpie/models/recpie_config.py)
- ``efficiency`` the data-efficiency curve: fractions and the bound's samples (this file)
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recpie.components.config import BackboneConfig, BaselinesConfig, TrainConfig
from recpie.config_checks import (
    FAST_OVERRIDES,
    check_decoding,
    check_explanation_modes,
    check_section,
    plain_value,
    value_at,
)
from recpie.config_loading import load_config
from recpie.data.config import DataConfig, resolve
from recpie.errors import ConfigError
from recpie.evaluation.config import EvalConfig
from recpie.explainer.config import ExplainerConfig, check_models
from recpie.models.recpie_config import RecPIEConfig
from recpie.rl.config import RLConfig

# what a run does: one module of recpie/recipes each
Recipe = StrEnum("Recipe", ["data_stats", "baselines", "recpie", "data_efficiency"])


@dataclass
class RunConfig:
    recipe: Recipe = Recipe.baselines  # what runs: "data_stats", "baselines", "recpie" or "data_efficiency"
    output_dir: str = "results"  # the run directory is <output_dir>/<experiment name>
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one training run per seed
    # a shortened run for demos and smoke tests: train.max_epochs becomes train.fast_max_epochs, each epoch
    # reads train.fast_limit_batches of the batches, and the baselines recipe runs seed 0 only (so an explicit
    # train.max_epochs= or run.seeds= override together with fast=true is refused)
    fast: bool = False
    resume: bool = True  # continue from the run directory's last checkpoint when one exists
    # resume a run although its input files' sha256 differ from those its provenance.json records (else
    # refused: the trained models would be re-scored on other data); the change is recorded there
    accept_changed_inputs: bool = False


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # "cpu", "gpu" or "auto"
    devices: str = "1"  # how many devices ("1", "2", "auto") of that accelerator
    strategy: str = "auto"  # Lightning strategy: "auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"
    precision: str = "32-true"  # "bf16-mixed" on GPUs; "32-true" on CPU
    num_nodes: int = 1  # machines of a multi-node run
    log_every_n_steps: int = 10  # TensorBoard scalar interval in optimizer steps


@dataclass
class EfficiencyConfig:
    """The data-efficiency recipe (recpie/recipes/data_efficiency.py)."""

    # train fractions of the curve; each trains the backbone and Markov on that share of the targets
    # (data.train_fraction_unit, data.train_fraction_seed), once per run.seeds entry
    fractions: list[float] = field(default_factory=lambda: [0.03, 0.06, 0.12, 0.25, 0.5, 1.0])
    # samples the prompt-information bound fits its reader on (val) and scores (test); 0 = all
    bound_val_samples: int = 0
    bound_test_samples: int = 0
    # the backbone's val-MRR search, per fraction: each entry one setting, space-separated key=value overrides
    # of the train and backbone sections (e.g. "train.lr=1e-3 backbone.dropout=0.5"). At every fraction seed
    # 0 of each setting is fitted; the one with the best val MRR (the first on a tie) trains every seed, and
    # the study's points record it. Empty: the config's own setting at every fraction
    search: list[str] = field(default_factory=list)


SEARCHABLE = ("train.", "backbone.")  # the sections a search setting may override


def with_setting(cfg: DictConfig, setting: str, where: str = "efficiency.search") -> DictConfig:
    """``cfg`` with one search setting's overrides applied and checked; ConfigError naming ``where`` and the
    setting for a key outside SEARCHABLE, an unknown key, a wrong type or a value out of range."""
    pairs = setting.split()
    bad = [p for p in pairs if "=" not in p or not p.startswith(SEARCHABLE)]
    if bad:
        raise ConfigError(f"{where}: {setting!r}: {bad[0]!r} is not a key=value override of "
                          f"{' or '.join(s.rstrip('.') for s in SEARCHABLE)} "
                          '(e.g. "train.lr=1e-3 backbone.dropout=0.5")')
    try:
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(pairs))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {setting!r}: {str(e).splitlines()[0]}") from None
    for section in ("train", "backbone"):
        try:
            check_section(value_at(merged, section), section)
        except ConfigError as e:
            raise ConfigError(f"{where}: {setting!r}: {e}") from None
    return merged


@dataclass
class ExperimentConfig:
    name: str = ""  # the experiment's name; defaults to the config file's name
    description: str = ""  # one line saying what the experiment shows
    run: RunConfig = field(default_factory=RunConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    recpie: RecPIEConfig = field(default_factory=RecPIEConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)


def load_experiment(name_or_path: str, overrides: list[str] | None = None) -> DictConfig:
    """The resolved, validated config of a named experiment (recpie.config_loading, recpie.config_checks)."""
    cfg = load_config(ExperimentConfig, name_or_path, overrides)
    validate(cfg, explicit=[o.split("=", 1)[0].lstrip("+") for o in overrides or []])
    return cfg


def run_seeds(cfg: DictConfig) -> list[int]:
    """The seeds a recipe trains: ``run.seeds``, or seed 0 alone under ``run.fast``."""
    return [0] if cfg.run.fast else list(cfg.run.seeds)


def data_config(cfg: DictConfig) -> DataConfig:
    """The experiment's data section as a DataConfig with the source's defaults filled in."""
    return resolve(OmegaConf.to_object(cfg.data))


def validate(cfg: DictConfig, explicit: Iterable[str] = ()) -> None:
    """Every section, then the combinations; ``explicit`` = keys set on the command line."""
    for section in ("run", "trainer", "data", "backbone", "train", "baselines", "eval", "explainer", "rl",
                    "recpie", "efficiency"):
        check_section(value_at(cfg, section), section)
    b = cfg.backbone
    if b.hidden_size % b.num_heads:
        raise ConfigError(f"backbone.hidden_size={b.hidden_size} must be a multiple of "
                          f"backbone.num_heads={b.num_heads}")
    if b.copy_full_history and not cfg.data.history_summary:
        raise ConfigError("backbone.copy_full_history=true needs data.history_summary=true (set one of them)")
    if cfg.rl.estimator in ("grpo", "rloo") and cfg.rl.group_size < 2:
        raise ConfigError(f"rl.estimator={cfg.rl.estimator} compares samples of one prompt: "
                          f"rl.group_size={cfg.rl.group_size} must be >= 2")
    for setting in cfg.efficiency.search:
        with_setting(cfg, setting)
    if len(set(cfg.efficiency.search)) != len(cfg.efficiency.search):
        raise ConfigError("efficiency.search lists a setting twice: drop the repeat")
    check_models(cfg.explainer)
    check_decoding(cfg.explainer)
    check_explanation_modes(cfg)
    if cfg.run.fast:
        clash = [k for k, (_, fast_value) in FAST_OVERRIDES.items()
                 if k in set(explicit) and plain_value(value_at(cfg, k)) != fast_value(cfg)]
        if clash:
            raise ConfigError(
                f"run.fast=true replaces {', '.join(f'{k} by {FAST_OVERRIDES[k][0]}' for k in clash)} (and trains "
                "on train.fast_limit_batches of the batches): drop the override or set run.fast=false")
