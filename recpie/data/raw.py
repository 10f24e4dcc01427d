"""Check-ins as read from a source, before any filtering: one row per input line kept.

Readers fill a ``RowBuffer`` with validated values; ``finish`` turns it into ``RawCheckins``, the input
of the one preprocessing pipeline shared by every source.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from tqdm import tqdm

from recpie.data.rawio import DataError


@dataclass
class RawCheckins:
    """Parallel columns, one entry per check-in, in file order."""

    source: str
    files: list[Path]  # every input file read (the cache key is built from these)
    user: np.ndarray  # str [n] raw user id
    venue: np.ndarray  # str [n] raw venue id
    category: list[str]  # [n] main category name, "" where unknown
    lat: np.ndarray  # float64 [n]
    lon: np.ndarray  # float64 [n]
    time: np.ndarray  # int64 [n] UTC seconds
    offset_min: np.ndarray  # int32 [n] local time = UTC + offset minutes
    venue_names: dict[str, str] = field(default_factory=dict)  # raw venue id -> display name
    skipped_lines: int = 0  # bad lines skipped under on_bad_line=skip

    def __len__(self) -> int:
        return len(self.time)


class RowBuffer:
    """Collects validated rows of one source; ``None`` offsets are derived from the coordinates."""

    def __init__(self):
        self.user: list[str] = []
        self.venue: list[str] = []
        self.category: list[str] = []
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.time: list[int] = []
        self.offset: list[int | None] = []

    def add(self, user: str, venue: str, category: str, lat: float, lon: float, time: int,
            offset: int | None) -> None:
        self.user.append(user)
        self.venue.append(venue)
        self.category.append(category)
        self.lat.append(lat)
        self.lon.append(lon)
        self.time.append(time)
        self.offset.append(offset)

    def finish(self, source: str, files: list[Path], skipped: int,
               venue_names: dict[str, str] | None = None) -> RawCheckins:
        if not self.time:
            raise DataError(f"{files[0]}: no valid check-in lines ({skipped} skipped); is it the right file?")
        time = np.asarray(self.time, dtype=np.int64)
        lat = np.asarray(self.lat, dtype=np.float64)
        lon = np.asarray(self.lon, dtype=np.float64)
        if any(o is None for o in self.offset):
            offset = local_offsets(lat, lon, time)
        else:
            offset = np.asarray(self.offset, dtype=np.int32)
        return RawCheckins(
            source=source, files=files, user=np.asarray(self.user), venue=np.asarray(self.venue),
            category=self.category, lat=lat, lon=lon, time=time, offset_min=offset,
            venue_names=venue_names or {}, skipped_lines=skipped,
        )


FIRST_YEAR = 2000  # location-based social networks start in the 2000s: an earlier year is a damaged date


def plausible_time(seconds: int, text: str) -> int:
    """``seconds`` (UTC) when it falls between FIRST_YEAR and next year; ValueError naming ``text`` otherwise
    (a year cut to "20" parses as 20 AD)."""
    last_year = datetime.now(timezone.utc).year + 1
    if not datetime(FIRST_YEAR, 1, 1, tzinfo=timezone.utc).timestamp() <= seconds < datetime(
            last_year + 1, 1, 1, tzinfo=timezone.utc).timestamp():
        raise ValueError(f"time {text!r} is outside the years {FIRST_YEAR}-{last_year}")
    return seconds


# what a field's parser raises on a value it cannot take: a reader sends each to its bad-line policy (a
# year of 10^11 overflows datetime, an offset of 10^11 overflowed int32 in finish, outside that policy)
BAD_VALUE = (ValueError, OverflowError)
MAX_OFFSET_MIN = 14 * 60  # UTC offsets run from -12:00 to +14:00: anything beyond +-14 h is damage


def parse_offset(text: str) -> int:
    """A UTC offset in whole minutes (TSMC2014's timezoneOffset) within +-MAX_OFFSET_MIN; ValueError otherwise.
    ASCII digits only: int() would also take "1_0" or another script's digits."""
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise ValueError(f"time-zone offset {text!r} is not a whole number of minutes")
    if abs(int(text)) > MAX_OFFSET_MIN:
        raise ValueError(f"time-zone offset {text!r} minutes is beyond +-{MAX_OFFSET_MIN} (+-14 h)")
    return int(text)


def parse_coordinate(text: str, limit: float, what: str) -> float:
    """A finite float within [-limit, limit]; ValueError naming the field otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise ValueError(f"{what} {text!r} outside [-{limit:g}, {limit:g}]")
    return value


@lru_cache(maxsize=1)
def _finder():
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def local_offsets(lat: np.ndarray, lon: np.ndarray, time: np.ndarray) -> np.ndarray:
    """UTC offset in minutes at each check-in, from its coordinates' time zone (DST included).

    The zone is looked up once per distinct location (timezonefinder, offline); the offset once per
    (zone, UTC hour), since zones change offset only on the hour.
    """
    locations, loc_idx = np.unique(np.stack([lat, lon], axis=1), axis=0, return_inverse=True)
    finder = _finder()
    zone_names = [finder.timezone_at(lat=a, lng=o) or "UTC"
                  for a, o in tqdm(locations, desc="time zones of locations", disable=None, leave=False)]
    zones, zone_of_loc = np.unique(np.asarray(zone_names), return_inverse=True)
    zone_idx = zone_of_loc[loc_idx.ravel()]
    hours = time // 3600
    keys, key_idx = np.unique(zone_idx * (1 << 40) + hours, return_inverse=True)
    offsets = np.empty(len(keys), dtype=np.int32)
    for k, key in enumerate(keys):
        tz = ZoneInfo(str(zones[key >> 40]))
        moment = datetime.fromtimestamp(int(key & ((1 << 40) - 1)) * 3600, tz=timezone.utc)
        offsets[k] = int(moment.astimezone(tz).utcoffset().total_seconds()) // 60
    return offsets[key_idx.ravel()]
