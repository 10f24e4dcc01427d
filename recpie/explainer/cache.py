"""On-disk explanation cache keyed by (sample key, policy version): nothing is generated twice."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class ExplanationCache:
    """Append-only JSONL file; a new policy version (e.g. after a PPO update) gets fresh entries. A bad line
    (a run killed mid-write, a full disk) is skipped with a warning: only that explanation is generated again."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "explanations.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[tuple[str, int], str] = {}
        self._needs_newline = False  # the file ends in a cut-off line: the next record starts a new one
        if self.path.is_file():
            raw = self.path.read_bytes()
            self._needs_newline = bool(raw) and not raw.endswith(b"\n")
            bad = []
            for lineno, line in enumerate(raw.splitlines(), 1):
                try:
                    rec = json.loads(line)
                    self._data[(str(rec["key"]), int(rec["version"]))] = str(rec["text"])
                except (ValueError, KeyError, TypeError):
                    bad.append(lineno)
            if bad:
                log.warning("%s: skipped %d unreadable line(s) (first: line %d); their explanations will be "
                            "generated again", self.path, len(bad), bad[0])

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, version: int) -> str | None:
        return self._data.get((key, version))

    def put_many(self, keys: list[str], version: int, texts: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            if self._needs_newline:
                f.write("\n")
                self._needs_newline = False
            for key, text in zip(keys, texts, strict=True):
                self._data[(key, version)] = text
                f.write(json.dumps({"key": key, "version": version, "text": text}) + "\n")
