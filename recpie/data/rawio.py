"""Reading raw files line by line: plain or gzip, decoding, and the bad-line policy.

Every problem is reported as ``<file>:<line>: <problem>``; with ``on_bad_line="skip"`` a bad line is
counted and logged instead, so a reader never turns a malformed line into silent garbage.
"""
from __future__ import annotations

import codecs
import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from recpie.errors import DataError

log = logging.getLogger(__name__)
PROGRESS_EVERY = 20_000  # lines between progress-bar updates


def find_file(folder: Path, name: str, how_to_get: str) -> Path:
    """``folder/name`` or ``folder/name.gz``; a missing file says where to get it and where to put it."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder / name} not found (nor {name}.gz). {how_to_get} "
        f"Put it at {folder / name} (plain or .gz), or set data.data_root / data.dataset_dir "
        f"(env RECPIE_DATA_ROOT) to where it is."
    )


class BadLines:
    """The bad-line policy of one file: raise at the first bad line, or count and skip them."""

    def __init__(self, path: Path, on_bad_line: str):
        self.path = path
        self.skip = on_bad_line == "skip"
        self.count = 0
        self.first: str | None = None

    def __call__(self, lineno: int, problem: str) -> None:
        message = f"{self.path}:{lineno}: {problem}"
        if not self.skip:
            raise DataError(message + " (set data.on_bad_line=skip to skip such lines)")
        self.count += 1
        self.first = self.first or message

    def report(self) -> None:
        if self.count:
            log.warning("%s: skipped %d bad line(s); first: %s", self.path, self.count, self.first)


def _open(path: Path):
    disk = open(path, "rb")
    return disk, (gzip.open(disk) if path.suffix == ".gz" else disk)


def file_encoding(path: Path, setting: str, native: str) -> str:
    """The encoding to read ``path`` with: ``setting`` (data.encoding) unless "auto"; then UTF-8 when the
    file holds non-ASCII text that all decodes as UTF-8 (a copy re-saved by an editor), else ``native``
    (the source's original encoding, e.g. latin-1 for TSMC2014, where "Café" would read as "CafÃ©")."""
    if setting != "auto":
        return setting
    decoder, non_ascii = codecs.getincrementaldecoder("utf-8")(), False
    disk, f = _open(path)
    try:
        with disk, f:
            while block := f.read(1 << 20):
                decoder.decode(block)
                non_ascii = non_ascii or not block.isascii()
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return native
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return native  # read_lines reports the corrupt file with its line
    return "utf-8" if non_ascii else native


def read_lines(path: Path, encoding: str, bad: BadLines) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its newline), skipping blank lines.

    A line that does not decode goes to ``bad``; a truncated or corrupt .gz always stops (the rest of
    the file is unknowable, so skipping cannot help).
    """
    lineno = 0
    # progress in bytes of the file on disk (compressed bytes for .gz); hidden when not on a terminal
    progress = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"reading {path.name}",
                    disable=None, leave=False)
    try:
        disk, f = _open(path)
        with disk, f:
            for lineno, raw in enumerate(f, start=1):
                if lineno % PROGRESS_EVERY == 0:
                    progress.update(disk.tell() - progress.n)
                try:
                    line = raw.decode(encoding).rstrip("\r\n")
                except UnicodeDecodeError as e:
                    bytes_ = raw[e.start:e.end]
                    bad(lineno, f"bytes invalid in {encoding} at column {e.start + 1}: {bytes_!r}")
                    continue
                if line.strip():
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"{path}:{lineno + 1}: truncated or corrupt gzip file ({e}); download it again"
        ) from e
    finally:
        progress.close()


def read_tsv(path: Path, encoding: str, n_fields: int, bad: BadLines) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a tab-separated file; a line with another field count goes to ``bad``."""
    for lineno, line in read_lines(path, encoding, bad):
        fields = line.split("\t")
        if len(fields) != n_fields:
            bad(lineno, f"{len(fields)} tab-separated fields, expected {n_fields}")
            continue
        yield lineno, fields
