"""What a run directory keeps so that the run can be reproduced: config, commit, versions, input hashes, machine.

The input hashes are part of the run's identity: a resumed run whose input files' sha256 differ from
those its provenance.json records is refused (``changed_inputs``) unless ``run.accept_changed_inputs=true``,
so a finished run is never silently re-tested on other data. Both files are written atomically
(recpie/utils/files.py); a damaged one is a ConfigError naming it and the way out.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recpie.errors import ConfigError
from recpie.utils.files import write_or_explain
from recpie.utils.machine import machine_record

log = logging.getLogger(__name__)

PACKAGES = (
    "torch", "lightning", "transformers", "peft", "bitsandbytes", "torchmetrics", "omegaconf",
    "tensorboard", "numpy", "gguf", "sentence-transformers",
)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def quick_digest(path: Path, edge: int = 1 << 20) -> str:
    """A cheap fingerprint of a file or of a folder's files (recursively): each file's relative name, size
    and the sha256 of its first and last ``edge`` bytes. A replaced model of the same size differs in its
    header or its tail (safetensors and GGUF headers hold the tensor layout); 2 MiB read per file keeps it
    fast for a 500 MB model. Not a content hash: a change only in the middle of a file goes unnoticed."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{size}\0".encode())
        with open(f, "rb") as handle:
            digest.update(handle.read(edge))
            if size > edge:
                handle.seek(max(edge, size - edge))
                digest.update(handle.read(edge))
    return digest.hexdigest()[:16]


def git_state(repo: Path) -> dict[str, str | bool | None]:
    """The commit and whether the tree had uncommitted changes (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_provenance(path: Path) -> dict:
    """The record in ``path``; ConfigError naming it and the way out when it is damaged."""
    try:
        record = json.loads(path.read_text())
        inputs = record.get("inputs", {}) if isinstance(record, dict) else None
        if not isinstance(inputs, dict) or not all(isinstance(v, dict) and "sha256" in v for v in inputs.values()):
            raise ValueError("not a provenance record")
        return record
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): it records the "
            "inputs this run was trained on and its earlier invocations. Restore it from a copy of the run "
            "folder, or delete it to resume without the input check (those records are then lost), or move "
            "the folder away to start over") from None


def changed_inputs(previous: dict, inputs: dict[str, dict]) -> list[str]:
    """How the input files differ from those an earlier invocation recorded (empty: the same). Files are
    paired in the order the config lists them, so a moved ``data.data_root`` with equal files passes."""
    old = list(previous.get("inputs", {}).items())
    new = list(inputs.items())
    if len(old) != len(new):
        return [f"the run read {len(old)} input file(s) ({', '.join(p for p, _ in old)}), this one reads "
                f"{len(new)} ({', '.join(p for p, _ in new)})"]
    return [f"{path} has sha256 {rec['sha256']}, but the run was trained on {old_path} with sha256 "
            f"{old_rec.get('sha256')}" for (old_path, old_rec), (path, rec) in zip(old, new, strict=True)
            if old_rec.get("sha256") != rec["sha256"]]


def write_provenance(run_dir: Path, cfg: DictConfig, input_files: list[Path], resumed: bool,
                     accept_changed_inputs: bool = False) -> None:
    """Write config.yaml and provenance.json into the run directory. A ``resumed`` (or re-tested) run keeps
    the records of the earlier invocations (``earlier_invocations``, oldest first): the commit a checkpoint
    was trained at is not lost when a later commit re-tests it. A run that starts over starts a new record.

    A resumed run must read the input files it was trained on: ConfigError (before anything is written)
    naming each changed file and both hashes, unless ``accept_changed_inputs`` (then the new hashes are
    recorded next to the earlier invocations' own)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "provenance.json"
    inputs = {str(p): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in input_files}
    earlier, changed = [], []
    if resumed and path.is_file():
        previous = read_provenance(path)
        changed = changed_inputs(previous, inputs)
        if changed and not accept_changed_inputs:
            raise ConfigError(
                f"{run_dir} was trained on other input files: {'; '.join(changed)}. Resuming would re-score "
                "its models on other data. Point data.data_root at the files it was trained on, or set "
                "run.accept_changed_inputs=true to resume on these (provenance.json keeps both), or move the "
                "folder away to start over")
        if changed:
            log.warning("resuming %s on changed input files (run.accept_changed_inputs=true): %s", run_dir,
                        "; ".join(changed))
        earlier = [*previous.pop("earlier_invocations", []), previous]
    write_or_explain(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True), "run.output_dir")
    record = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine_record(),  # the CPU and its features, cores, GPUs: every timing names them
        "git": git_state(Path(__file__).resolve().parents[2]),
        "packages": package_versions(),
        "inputs": inputs,
        "earlier_invocations": earlier,
    }
    if resumed and changed:
        record["accepted_changed_inputs"] = changed  # what run.accept_changed_inputs=true let through
    write_or_explain(path, json.dumps(record, indent=2) + "\n", "run.output_dir")
