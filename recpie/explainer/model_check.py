"""What can be known about the explainer's LLM before any training: that ``explainer.model`` names a model
whose config loads, and that every ``explainer.lora.target_modules`` entry names modules of it.

Without this a wrong path surfaced after the backbone's warm-up, as transformers' traceback blaming the
internet connection (a missing folder is tried as a hub id), and a misspelt LoRA target was dropped by peft
in silence as long as another one matched (llm.check_lora_targets, which load_llm asks too). The module
names come from the model built on the meta device from its config: no weights are read.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from recpie.errors import ConfigError
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.llm import check_lora_targets, resolve_model_path


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _looks_like_path(value: str) -> bool:
    """A value meant as a local path: a hub id is ``name`` or ``owner/name``, never absolute or ``~``/``.``-led."""
    return value.startswith(("/", "~", ".")) or value.count("/") > 1 or "\\" in value


def model_config(cfg: ExplainerConfig, path: str) -> PretrainedConfig:
    """The config of the model at ``path`` (resolve_model_path(cfg)); ConfigError naming explainer.model and
    the path when it is not there or does not load."""
    local = Path(path).expanduser()
    key = f"explainer.model={cfg.model!r}"
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key}: {local} holds no config.json, so it is not a Hugging Face model folder "
                              "(save one with save_pretrained, or give a .gguf file)")
        try:
            return AutoConfig.from_pretrained(local, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{key}: the config of {local} does not load ({_first_line(e)})") from None
    if local.exists() or _looks_like_path(path):
        what = "is a file, not a model folder" if local.exists() else "does not exist"
        raise ConfigError(f"{key}: {local} {what}; give a local Hugging Face model folder, a .gguf file, a hub id "
                          "or embedded:gemma3-270m")
    try:  # a hub id (or a relative folder that is not there: both are named): its cached copy, else the hub
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        pass
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: no folder {local.resolve()}, and as a hub id it could not be loaded "
                          f"({_first_line(e)[:200]}); check the path, or the hub id and the connection") from None


def module_names(config: PretrainedConfig) -> list[str]:
    """The names of every module of the causal LM ``config`` describes, built without memory (meta device)."""
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, ImportError) as e:
        raise ConfigError(f"explainer.model: transformers cannot build a causal LM from its config "
                          f"({_first_line(e)[:200]})") from None
    return [name for name, _ in model.named_modules()]


def check_llm(cfg: ExplainerConfig) -> None:
    """Before any training: the model resolves (a GGUF or the embedded model is converted once, as its first
    load would), its config loads, and the LoRA targets exist in it."""
    try:
        path = resolve_model_path(cfg)
    except ImportError as e:  # the embedded model's package is missing: its message says what to install
        raise ConfigError(f"explainer.model={cfg.model!r}: {e}") from None
    names = module_names(model_config(cfg, path))
    check_lora_targets(names, cfg.lora.target_modules, cfg.model)
