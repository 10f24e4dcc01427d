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
    """``folder/name`` or ``folder/name.gz``; a missing file says where to get it and where to put it.

    When both are there they must hold the same text (``gunzip -k`` leaves both): the plain one is read.
    Two different files of one name are refused, naming both, rather than one of them used in silence."""
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.is_file() and packed.is_file():
        problem = _differs(plain, packed)
        if problem:
            raise DataError(f"{plain} and {packed} are both there and differ ({problem}): which one is the data "
                            "is ambiguous; move or delete the one that is not")
        return plain
    for candidate in (plain, packed):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder / name} not found (nor {name}.gz). {how_to_get} "
        f"Put it at {folder / name} (plain or .gz), or set data.data_root / data.dataset_dir "
        f"(env RECPIE_DATA_ROOT) to where it is."
    )


def _differs(plain: Path, packed: Path) -> str | None:
    """Why ``packed`` does not decompress to the bytes of ``plain`` (None when it does). The size gzip
    records in its last 4 bytes (mod 2^32) rules most pairs out without decompressing."""
    size = plain.stat().st_size
    try:
        with open(packed, "rb") as f:
            f.seek(-4, 2)
            recorded = int.from_bytes(f.read(4), "little")
        if recorded != size % (1 << 32):
            return f"{recorded:,} bytes when unpacked against {size:,}"
        with open(plain, "rb") as a, gzip.open(packed) as b:
            offset = 0
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if x != y:
                    return f"first difference within bytes {offset:,}-{offset + (1 << 20):,}"
                if not x:
                    return None
                offset += len(x)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        return f"the .gz cannot be read: {e}"


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
    (the source's original encoding, e.g. latin-1 for TSMC2014, where "Café" would read as "CafÃ©").

    A file that mixes both (UTF-8 text with a stray byte, or latin-1 text with a few byte pairs that happen
    to be UTF-8) is read as the encoding most of its non-ASCII lines decode in, with a warning naming the
    file, its first undecodable line, and data.encoding; under UTF-8 its undecodable lines are bad lines."""
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
        return _mixed_encoding(path, native)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return native  # read_lines reports the corrupt file with its line
    return "utf-8" if non_ascii else native


def _mixed_encoding(path: Path, native: str) -> str:
    """The encoding of a file that is not all UTF-8, from a count of its non-ASCII lines (see file_encoding)."""
    utf8 = invalid = 0
    first_utf8 = first_invalid = None
    disk, f = _open(path)
    try:
        with disk, f:
            for lineno, raw in enumerate(f, start=1):
                if raw.isascii():
                    continue
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    invalid += 1
                    first_invalid = first_invalid or (lineno, raw[e.start:e.end])
                    continue
                utf8 += 1
                first_utf8 = first_utf8 or lineno
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass  # read_lines reports the corrupt file with its line; count what came before
    if native == "utf-8" or not utf8 or first_invalid is None:
        return native  # all its non-ASCII text is in the source's encoding (or the .gz broke first): nothing to tell
    line, bytes_ = first_invalid
    if utf8 > invalid:
        log.warning("%s: %d line(s) of UTF-8 text, but %d line(s) that are not UTF-8 (first: line %d, bytes %r): "
                    "read as UTF-8, those lines are bad lines (data.on_bad_line); if the file is %s, set "
                    "data.encoding=%s", path, utf8, invalid, line, bytes_, native, native)
        return "utf-8"
    log.warning("%s: read as %s, its source's encoding (%d line(s) are not UTF-8, first: line %d, bytes %r), "
                "although %d line(s) would decode as UTF-8 (first: line %d), where they read differently; if "
                "the file is UTF-8, fix those lines or set data.encoding=utf-8", path, native, invalid, line,
                bytes_, utf8, first_utf8)
    return native


def read_lines(path: Path, encoding: str, bad: BadLines) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its newline), skipping blank lines.

    A UTF-8 byte-order mark at the file's start is dropped. A line that does not decode goes to ``bad``;
    a truncated or corrupt .gz always stops (the rest of the file is unknowable, so skipping cannot help).
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
                if lineno == 1:  # a byte-order mark is not text (kept, it made the first row's user "\ufeff470")
                    raw = raw.removeprefix(codecs.BOM_UTF8)
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
