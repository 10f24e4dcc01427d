"""On-disk explanation cache keyed by (sample key, policy version): nothing is generated twice."""
from __future__ import annotations

import json
from pathlib import Path


class ExplanationCache:
    """Append-only JSONL file; a new policy version (e.g. after a PPO update) gets fresh entries."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "explanations.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[tuple[str, int], str] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        rec = json.loads(line)
                        self._data[(rec["key"], int(rec["version"]))] = rec["text"]
                    except (json.JSONDecodeError, KeyError) as e:
                        msg = f"{self.path}:{lineno}: bad cache line ({e}); delete the file"
                        raise ValueError(msg) from e

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, version: int) -> str | None:
        return self._data.get((key, version))

    def put_many(self, keys: list[str], version: int, texts: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for key, text in zip(keys, texts, strict=True):
                self._data[(key, version)] = text
                f.write(json.dumps({"key": key, "version": version, "text": text}) + "\n")
