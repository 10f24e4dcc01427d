"""Named experiment configs: YAML files read with omegaconf onto typed dataclasses.

A name resolves to ``experiments/configs/<name>.yaml`` (or is a path to a YAML file). A config may start
from another with ``extends: <name>``; command-line overrides (``key.sub=value``) come last. Every key is
checked against the dataclasses, so a misspelt key fails at once with the file and the keys it allows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from recpie.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def available_experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no experiment named {name_or_path!r} (looked for {path}); "
            f"available: {', '.join(available_experiments())}"
        )
    return path


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file and, first, every file it extends."""
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {[str(p) for p in seen]}")
    try:
        raw = OmegaConf.load(path)
    except Exception as exc:  # omegaconf wraps yaml errors in many types
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    chain = _read_yaml_chain(config_path(str(parent)), (*seen, path)) if parent else []
    return [*chain, (path, raw)]


def _known_keys(schema: DictConfig, dotted: str) -> str:
    node: Any = schema
    parts = dotted.split(".")[:-1]
    for part in parts:
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            break
    keys = list(node.keys()) if isinstance(node, DictConfig) else []
    return ", ".join(str(k) for k in keys)


def _merge(base: DictConfig, layer: DictConfig | ListConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except (ConfigKeyError, ValidationError, OmegaConfBaseException) as exc:
        key = getattr(exc, "full_key", None) or "?"
        hint = f" Allowed keys here: {_known_keys(base, key)}." if isinstance(exc, ConfigKeyError) else ""
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: bad config key {key!r}: {first_line}.{hint}") from None


def load_config(schema_cls: type, name_or_path: str, overrides: list[str] | None = None) -> DictConfig:
    """Resolve a named experiment onto the typed schema; raise ConfigError naming the bad key."""
    cfg: DictConfig = OmegaConf.structured(schema_cls)
    for path, layer in _read_yaml_chain(config_path(name_or_path)):
        cfg = _merge(cfg, layer, str(path))
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key.sub=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([override]), f"override {override!r}")
    if "name" in cfg and not cfg.name:
        cfg.name = Path(name_or_path).stem
    return cfg
