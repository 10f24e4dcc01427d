"""Whether a run folder may be (re)used by a config: checked before anything is written into it.

A folder that holds checkpoints was trained with the config in its ``config.yaml``. Resuming it with
another config would mix two experiments in one result, so every key must match except those in
``MAY_CHANGE`` (each with the reason it cannot change what was trained). ``run.resume=false`` on such a
folder is refused rather than cleaned: deleting a finished run's checkpoints is the user's call, and
leaving them would let an old ``best-*.ckpt`` stand next to the new run's files.

A run folder is ``<run.output_dir>/<name>`` with a plain folder name (``run_dir_of``: no separator or
``..`` escapes ``run.output_dir``), and one process at a time runs in it (``run_folder_lock``).
"""
from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from recpie.errors import ConfigError

# key (or whole section) -> why it may differ between a folder's config.yaml and the resuming command
MAY_CHANGE = {
    "name": "a copied or moved run folder may carry another name",
    "description": "text only",
    "run.resume": "the switch that asks for the resume itself",
    "run.accept_changed_inputs": "the switch that lets a resume read changed input files (recorded in provenance.json)",
    "run.output_dir": "where the folder lives: a moved or copied run resumes in its new place",
    "run.seeds": "each seed trains in its own checkpoint folder, so seeds may be added",
    "efficiency.fractions": "each fraction of a study trains in its own folders and points: fractions may be added",
    "efficiency.search": "each search setting trains in its own folders; a point whose choice changes is refitted",
    "train.max_epochs": "a larger bound extends the training from last.ckpt, keeping its best score",
    "train.patience": "a longer patience trains an early-stopped fit on from last.ckpt, keeping its best score",
    "recpie.cycles": "more cycles extend the joint training from last.ckpt",
    "recpie.test_checkpoint": "which checkpoint the final test scores: a finished run may be re-tested",
    "recpie.reference_study": "what results.md is compared with after the test, never what is trained",
    "recpie.sft_eval_every": "the warm-up curve only measures (its texts are never stored or cached, the random "
                             "state is restored): never what is trained",
    "recpie.sft_eval_samples": "the warm-up curve's val samples: measurement only, never what is trained",
    "eval": "the evaluator's export, chunking, breakdowns and bootstrap never change the training",
    "trainer.log_every_n_steps": "logging only",
    "data.data_root": "where the inputs live: their sha256 must still equal provenance.json's (else refused)",
    "data.cache_dir": "where the processed-data cache lives",
    "explainer.cache_dir": "where converted models are kept",
    "explainer.explanation_cache": "where generated explanations are cached (keyed by the fingerprint)",
}


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for name, sub in node.items() for k, v in _flat(sub, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): node}


def changed_keys(old: DictConfig, new: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ and that may not change on resume: {key: (old, new)}."""
    a = _flat(OmegaConf.to_container(old, resolve=True, enum_to_str=True))
    b = _flat(OmegaConf.to_container(new, resolve=True, enum_to_str=True))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not _may_change(k)}


# keys added after runs were written -> the value every earlier run had in effect: at that value a key is
# left out of ``config_fingerprint``, so an earlier run's checkpoints resume and its cached explanations
# (keyed by the fingerprint) are found again; at any other value it changes the fingerprint
ADDED_SINCE = {
    "explainer.show_scores": False,
    "rl.lr": 0.0,
    "explainer.readout_layers": [-1],
    "explainer.depart_margin": 0.0,
    "explainer.habit_match": False,
}


def config_fingerprint(cfg: DictConfig, sections: tuple[str, ...]) -> str:
    """A short hash of ``sections`` of the config without the keys that may change on resume (nor those of
    ``ADDED_SINCE`` at the value runs had before the key existed)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) for k in sections}
    for key in MAY_CHANGE:
        section, _, rest = key.partition(".")
        if section in parts and rest:
            parts[section].pop(rest, None)
    for key, before in ADDED_SINCE.items():
        section, _, rest = key.partition(".")
        if section in parts and rest in parts[section] and parts[section][rest] == before:
            parts[section].pop(rest)
    return f"{zlib.crc32(repr(sorted(parts.items())).encode()):08x}"


LOCK = ".recpie.lock"  # inside the run folder; holds the pid of the process running in it


def run_dir_of(cfg: DictConfig) -> Path:
    """``<run.output_dir>/<name>``; ConfigError for a name that is not one plain folder name (a path
    separator, ``..``, ``.``, empty): the run folder must not escape ``run.output_dir``."""
    name = str(cfg.name)
    separators = {"/", "\\", os.sep, os.altsep or "/", "\0"}
    if name in {"", ".", ".."} or any(sep in name for sep in separators):
        raise ConfigError(f"experiment name {name!r} (the config's name: key, else its file name) is not a plain "
                          "folder name: the run folder is <run.output_dir>/<name>, so the name may not hold "
                          "'/', '\\' or be '.' or '..'; choose another name, or set run.output_dir to move the folder")
    return Path(cfg.run.output_dir) / name


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if missing) while the block runs: a second run started
    on the same folder is refused with the holder's pid instead of training next to it. The lock is an
    ``fcntl.flock`` on ``run_dir/.recpie.lock``, released by the kernel when the holder exits or is killed,
    so a stale lock file never blocks a resume."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder {run_dir} ({e.strerror or type(e).__name__}): set "
                          "run.output_dir to a writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(f"{run_dir} is in use by another run (pid {holder}): wait for it to finish or stop "
                              "it, or set run.output_dir or the experiment name to another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _cut_text(path: Path) -> bool:
    """Whether ``path`` is UTF-8 text without the final newline every writer of it ends with (cut short)."""
    try:
        data = path.read_bytes()
        data.decode()
    except (OSError, UnicodeDecodeError):
        return False
    return not data.endswith(b"\n")


def _load_saved_config(saved: Path, start_over: str) -> DictConfig:
    """The folder's config.yaml; ConfigError naming it and the way out when it is damaged (cut short by a
    kill or a full disk before writes were atomic, or edited by hand)."""
    try:
        loaded = OmegaConf.load(saved)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as e:
        loaded, reason = None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        reason = "not a whole experiment config"
    if _cut_text(saved):  # a text file whose parse may fail or not: what went wrong is the cut
        reason = "cut short: its last line has no newline"
    elif isinstance(loaded, DictConfig) and "name" in loaded and "run" in loaded:
        return loaded
    raise ConfigError(f"{saved} is damaged ({reason}), so the config its checkpoints were trained with is "
                      f"unknown. If you know it, rewrite the file (python -m recpie run NAME [key=value ...] "
                      f"--print-config > {saved}) and resume; or {start_over}")


def accept_run_folder(run_dir: Path, cfg: DictConfig, schema: DictConfig) -> bool:
    """True when ``cfg`` resumes the run in ``run_dir``, False for a new run; ConfigError (naming the keys
    that differ, or how to start over) when the folder's checkpoints belong to another run. ``schema`` gives
    the defaults of keys an older config.yaml lacks."""
    checkpoints = sorted(run_dir.rglob("*.ckpt")) if run_dir.is_dir() else []
    if not checkpoints:
        return False
    start_over = (f"to start over, move or delete {run_dir} (or set run.output_dir or the experiment name "
                  "to another folder)")
    if not cfg.run.resume:
        raise ConfigError(f"{run_dir} holds the checkpoints of an earlier run (e.g. {checkpoints[0]}) and "
                          f"run.resume=false: set run.resume=true to continue it, or {start_over}")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir} holds checkpoints but no config.yaml, so their config is unknown; {start_over}")
    try:
        old = OmegaConf.merge(schema, _load_saved_config(saved, start_over))
    except ConfigKeyError as e:
        raise ConfigError(f"{saved} sets {e.full_key}, which this version of RecPIE no longer has, so it cannot "
                          "tell whether the checkpoints still mean the same run. If the training did not depend "
                          f"on it, delete that line from {saved} and resume; or {start_over}") from None
    except OmegaConfBaseException as e:  # a value of the wrong type: a damaged or hand-edited file
        raise ConfigError(f"{saved} is damaged ({e.full_key}: {str(e).splitlines()[0]}): correct that key (the "
                          f"command's --print-config shows its value) and resume; or {start_over}") from None
    diff = changed_keys(old, cfg)
    if diff:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{run_dir} was trained with another config ({listed}). Resume it with the config in "
                          f"{saved} (only {', '.join(MAY_CHANGE)} may change), or {start_over}")
    return True
