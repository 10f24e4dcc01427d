"""On-disk explanation cache keyed by (sample key, policy version): nothing is generated twice.

The folder is checked for writability when the cache opens (and by ``python -m recpie run`` before any
training), naming ``explainer.explanation_cache``; a write that fails later (a full disk) costs a warning
and the cache goes on in memory for the rest of the process. The keys themselves (recpie/explainer/
explainer.py) carry a digest of the base model's files, so a model replaced at the same path never
reuses the old model's texts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from recpie.errors import ConfigError
from recpie.utils.files import check_writable

log = logging.getLogger(__name__)


class ExplanationCache:
    """Append-only JSONL file; a new policy version (e.g. after a PPO update) gets fresh entries. A bad line
    (a run killed mid-write, a full disk) is skipped with a warning: only that explanation is generated again."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "explanations.jsonl"
        check_writable(self.path.parent, "explainer.explanation_cache", 'or "" for no explanation cache')
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"explainer.explanation_cache: {self.path} is not a file: move it away, or set "
                              "explainer.explanation_cache to another folder")
        self.on_disk = True  # False once a write failed: the cache then lives in memory only
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
        """Keep the texts in memory and append them to the file; a failed write (a full disk, a folder
        removed meanwhile) warns once and leaves the cache in memory: the run goes on, and at worst a cut
        last line is skipped when the file is read again."""
        for key, text in zip(keys, texts, strict=True):
            self._data[(key, version)] = text
        if not self.on_disk:
            return
        lines = "".join(json.dumps({"key": k, "version": version, "text": t}) + "\n"
                        for k, t in zip(keys, texts, strict=True))
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(("\n" if self._needs_newline else "") + lines)
            self._needs_newline = False
        except OSError as e:
            self.on_disk = False
            self._needs_newline = True  # the failed append may have left a cut line
            log.warning("could not write the explanation cache %s (%s): keeping explanations in memory for the "
                        "rest of this run; free space there or set explainer.explanation_cache elsewhere",
                        self.path, e.strerror or e)
