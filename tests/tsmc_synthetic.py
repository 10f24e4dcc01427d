"""A small TSMC2014 file in the original layout, big enough for the whole protocol (every split non-empty):
the venues, categories and coordinates of the first rows of the fixture cut from the real NYC file,
visited by a few users twice a day (1 h apart), every other day: one trajectory per visit day."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "checkins" / "dataset_TSMC2014_NYC.txt"
START = datetime(2012, 4, 3, 18, 0, 9, tzinfo=timezone.utc)


def tsmc_rows(users: int = 12, days: int = 10, venues: int = 6) -> list[bytes]:
    """Lines (latin-1 bytes, no newline) of user u's visits on each day: venue (u + day) % venues, then the next."""
    real = FIXTURE.read_bytes().splitlines()[:venues]
    rows = []
    for day in range(days):
        for u in range(users):
            for step in range(2):
                fields = real[(u + day + step) % venues].split(b"\t")
                when = START + timedelta(days=2 * day, hours=step, minutes=u)
                fields[0] = str(100 + u).encode()
                fields[7] = when.strftime("%a %b %d %H:%M:%S +0000 %Y").encode()
                rows.append(b"\t".join(fields))
    return rows


def write_tsmc(folder: Path, rows: list[bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dataset_TSMC2014_NYC.txt"
    path.write_bytes(b"".join(r + b"\n" for r in (tsmc_rows() if rows is None else rows)))
    return path
