"""Checkpoints: the one loader of checkpoint files, and the callbacks every recipe uses.

``load_checkpoint`` reads with ``weights_only=True`` (tensors and plain containers: a crafted file cannot
run code) and turns a truncated or foreign file into an error naming it and the fix.

A model's checkpoint records the supervision draw of the data it was trained on (``DRAW_KEY``, written by
the modules from recpie.data.fraction.supervision_draw): a backbone's transition prior is built from the
kept train steps, so a backbone loaded into data of another ``data.train_fraction`` ranks differently.
``load_weights(..., draw=)`` refuses such a pair (``check_draw``).

Lightning's ``save_last=True`` only refreshes last.ckpt when a top-k checkpoint is written, so after an
epoch without improvement it would point at an older epoch; a second, monitor-less callback keeps
``last.ckpt`` at the end of every epoch (after its validation), which is where runs resume.
"""
from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from recpie.errors import CheckpointError

log = logging.getLogger(__name__)
DRAW_KEY = "supervision_draw"  # {"fraction", "unit", "seed"} of the training data (see the module docstring)
# the config keys of a draw's fields (recpie.data.config.DataConfig)
DRAW_KEYS = {"fraction": "data.train_fraction", "unit": "data.train_fraction_unit", "seed": "data.train_fraction_seed"}


def load_checkpoint(path: str | Path, what: str) -> Any:
    """The object saved at ``path`` (on the CPU), loaded without running code; ``what`` names the key or
    flag that gave the path, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # what torch.load raises on a file it cannot take depends on the file (a text file: KeyError)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError,
            IndexError, TypeError, AttributeError) as e:
        raise CheckpointError(_why_unreadable(path, what, e)) from None


# torch's advice around the one line that says what is wrong (its texts changed across 2.x releases)
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6",
                      "(1)", "(2)", "WeightsUnpickler error:")
_TRUNCATED = ("truncated", "Ran out of input", "unexpected end")  # a pickle that ends early


def _torch_detail(e: BaseException) -> str:
    """The line of torch's message that names the problem, without its advice (e.g. to allowlist a global)."""
    if isinstance(e, KeyError):  # str() of a KeyError is its key alone
        return f"KeyError {e}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    tail = text.partition("WeightsUnpickler error:")[2]
    lines = [line.strip() for line in (tail or text).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)] or [type(e).__name__]
    return lines[0].split(". Please use")[0].split(" This is an internal miniz error")[0].rstrip(".")


def _why_unreadable(path: Path, what: str, e: BaseException) -> str:
    """Why torch.load failed on ``path``, from the file's structure, so that a foreign or crafted file is never
    reported as a cut one: a cut file (a kill, a full disk) is empty, ends inside its pickle, or is a zip
    without its end; a whole zip without ``data.pkl`` is another program's archive; a whole file whose
    pickle asks for anything but tensors and plain containers is refused as possibly crafted; bytes that are
    neither a zip nor a pickle are named as either damage or another kind of file."""
    detail = _torch_detail(e)
    with open(path, "rb") as f:
        head = f.read(4)
    cut = (f"{what}: {path} is truncated or corrupt ({detail}), e.g. written while the disk was full: restore it "
           "from a copy, or delete it (a run then retrains what it held)")
    crafted = (f"{what}: refused to load {path}: it holds objects other than tensors and plain containers, which "
               f"could run code when loaded ({detail}); load only checkpoints written by this project")
    foreign = (f"{what}: {path} is not a torch checkpoint ({{}}): pass a .ckpt/.pt written by this project "
               "(torch.save; a run's checkpoints/)")
    if not head:
        return cut
    if head == b"PK\x03\x04":  # torch.save's zip format: its structure tells a cut file from a whole one
        try:
            with zipfile.ZipFile(path) as archive:
                names, broken = archive.namelist(), archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError):
            return cut
        if broken:
            return cut
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return foreign.format(f"a zip archive of {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
        return crafted if isinstance(e, pickle.UnpicklingError) else foreign.format(
            f"a whole zip archive that torch cannot read: {detail}")
    if isinstance(e, EOFError) or any(word in detail for word in _TRUNCATED):
        return cut
    if head[:1] == b"\x80":  # a pickle: torch's legacy format, or a plain pickle (no torch magic number)
        return crafted if isinstance(e, pickle.UnpicklingError) else foreign.format(detail)
    return (f"{what}: {path} is truncated or corrupt, or not a checkpoint at all ({detail}): restore it from a "
            "copy, or delete it (a run then retrains what it held)")


def recorded_draw(checkpoint: Any) -> dict | None:
    """The supervision draw a checkpoint's model was trained on ({"fraction", "unit", "seed"}); None for a
    file written before checkpoints recorded it."""
    draw = checkpoint.get(DRAW_KEY) if isinstance(checkpoint, dict) else None
    return dict(draw) if isinstance(draw, dict) else None


def _draw_text(draw: dict) -> str:
    if float(draw["fraction"]) == 1.0:
        return f"{DRAW_KEYS['fraction']}=1.0 (every train target)"
    return ", ".join(f"{DRAW_KEYS[k]}={draw[k]}" for k in DRAW_KEYS)


def check_draw(checkpoint: Any, path: str | Path, what: str, draw: dict) -> None:
    """CheckpointError when ``checkpoint`` records another supervision draw than ``draw`` (the data it is
    loaded into: recpie.data.fraction.supervision_draw); a checkpoint without the record is let through with
    a warning. Never adapts the data to the checkpoint: the config says what the data is."""
    recorded = recorded_draw(checkpoint)
    if recorded is None:
        log.warning("%s: %s does not record the training data's supervision draw (written before checkpoints "
                    "recorded it): it is loaded as before, unchecked against this config's %s; if it was trained "
                    "on a share of the train targets, pass the same data.train_fraction, unit and seed",
                    what, path, _draw_text(draw))
        return
    if recorded == draw:
        return
    fields = DRAW_KEYS if float(recorded["fraction"]) != 1.0 else {"fraction": DRAW_KEYS["fraction"]}
    fix = " ".join(f"{key}={recorded[k]}" for k, key in fields.items() if recorded[k] != draw.get(k))
    raise CheckpointError(
        f"{what}: {path} was trained on {_draw_text(recorded)}, but this config's data is {_draw_text(draw)}; "
        "the backbone's transition prior comes from the kept train steps, so it would rank differently from "
        f"its fit: pass {fix} (or a checkpoint trained on this config's data)")


def load_weights(path: str | Path, what: str, prefix: str, draw: dict | None = None) -> dict[str, torch.Tensor]:
    """The weights of one module (``prefix``, e.g. "backbone.") in a Lightning checkpoint, prefix removed.
    ``draw``: the supervision draw of the data the weights go into (recpie.data.fraction.supervision_draw),
    checked against the checkpoint's record (``check_draw``); None: not checked."""
    checkpoint = load_checkpoint(path, what)
    if draw is not None:
        check_draw(checkpoint, path, what, draw)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    weights = {k.removeprefix(prefix): v for k, v in (state or {}).items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{what}: {path} holds no {prefix.rstrip('.')} weights: pass a .ckpt of a run that "
                              f"trained one (e.g. results/<NAME>/.../checkpoints/best-*.ckpt)")
    return weights


class FolderCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose restored state points into its own folder. Lightning keeps the absolute
    paths of the folder a checkpoint was written in (a copied run tested the original's best file), or,
    when the folder moved, drops the best score with a warning (a copy then took its next epoch as best)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = Path(self.dirpath)

        def rebase(path: str) -> str:
            return str(here / Path(path).name) if path else path

        state = {**state_dict, "dirpath": self.dirpath}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = rebase(state[key])
        state["best_k_models"] = {rebase(k): v for k, v in state.get("best_k_models", {}).items()}
        super().load_state_dict(state)

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"ModelCheckpoint{kwargs!r}"  # Lightning's own key: runs written before this class resume


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """[best by ``monitor`` (max), latest as last.ckpt]; ``trainer.checkpoint_callback`` is the first."""
    # no "-v1" copies: a file of the same name is a leftover of this run's own interrupted invocation (the
    # folder holds one run, locked), killed after writing its best but before last.ckpt: overwritten, not kept
    best = FolderCheckpoint(dirpath=dirpath, monitor=monitor, mode="max", filename="best-{epoch}",
                            enable_version_counter=False)
    latest = FolderCheckpoint(dirpath=dirpath, filename="last", enable_version_counter=False)
    return [best, latest]


def resume_from(last: Path, resume: bool) -> str | None:
    """``last`` as the ``ckpt_path`` a run resumes from (None: start fresh), once it is known to be whole:
    Lightning would fail on a truncated file with a bare zip error."""
    if not resume or not last.is_file():
        return None
    try:
        with zipfile.ZipFile(last) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        broken = str(e)
    if broken:
        raise CheckpointError(
            f"cannot resume: {last} is truncated or corrupt ({broken}), e.g. written while the disk was full: "
            "restore it, or delete it to retrain that variant from the start (the folder's other checkpoints "
            "stay as they are)")
    return str(last)


def recorded_best(folder: Path, monitor: str = "val/mrr", must_exist: bool = True) -> Path:
    """The best checkpoint of ``folder`` as its last.ckpt recorded it (the file name, inside ``folder``):
    never a path of the folder the run was first written in, never a stale file of an earlier run.
    ``must_exist=False`` returns the name even when the file is gone: the best callback deletes the old best
    after writing a new one and before last.ckpt is rewritten, so a kill or a full disk in between leaves a
    last.ckpt naming a deleted file, which resuming the fit from it writes again."""
    last = folder / "last.ckpt"
    if not last.is_file():
        raise CheckpointError(f"no last.ckpt in {folder}: is it the checkpoint folder of a finished run?")
    states = load_checkpoint(last, "the run's last checkpoint").get("callbacks", {})
    best = [s.get("best_model_path") for k, s in states.items()
            if k.startswith("ModelCheckpoint")
            if s.get("monitor") == monitor and s.get("best_model_path")]
    if not best:
        raise CheckpointError(f"{last} records no best checkpoint by {monitor}: was the run stopped before "
                              "its first validation? Resume it with the same command")
    path = folder / Path(best[0]).name
    if must_exist and not path.is_file():
        raise CheckpointError(f"{last} names {path.name} as the best checkpoint, but {path} is missing: "
                              "restore it, or re-run the experiment to retrain")
    return path
