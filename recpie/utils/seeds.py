"""Seeds derived from (seed, cycle, rank, phase): every random choice of a run can be replayed on resume."""
from __future__ import annotations

import zlib


def phase_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from (seed, cycle, rank, phase name, ...)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF
