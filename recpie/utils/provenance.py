"""What a run directory keeps so that the run can be reproduced: config, commit, versions, input hashes."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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


def write_provenance(run_dir: Path, cfg: DictConfig, input_files: list[Path], resumed: bool) -> None:
    """Write config.yaml and provenance.json into the run directory. A ``resumed`` (or re-tested) run keeps
    the records of the earlier invocations (``earlier_invocations``, oldest first): the commit a checkpoint
    was trained at is not lost when a later commit re-tests it. A run that starts over starts a new record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "provenance.json"
    earlier = []
    if resumed and path.is_file():
        previous = json.loads(path.read_text())
        earlier = [*previous.pop("earlier_invocations", []), previous]
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    record = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_state(Path(__file__).resolve().parents[2]),
        "packages": package_versions(),
        "inputs": {str(p): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in input_files},
        "earlier_invocations": earlier,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
