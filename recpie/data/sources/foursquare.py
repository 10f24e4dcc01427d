"""Foursquare TSMC2014 (Yang et al.): ``dataset_TSMC2014_<CITY>.txt``, the original layout.

Tab-separated, latin-1 (a UTF-8 copy is detected: data.encoding), no header, 8 columns: userId, venueId,
venueCategoryId, venueCategory, latitude, longitude, timezoneOffset (minutes), utcTimestamp
(``Tue Apr 03 18:00:09 +0000 2012``).
Venue names are not part of TSMC2014; an optional CSV (venue_id,name) supplies them.
"""
from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timezone
from pathlib import Path

from recpie.data.config import DataConfig
from recpie.data.raw import (
    BAD_VALUE,
    RawCheckins,
    RowBuffer,
    parse_coordinate,
    parse_offset,
    plausible_time,
)
from recpie.data.rawio import BadLines, DataError, file_encoding, find_file, read_tsv

log = logging.getLogger(__name__)

HOW_TO_GET = (
    "Download dataset_tsmc2014.zip from https://sites.google.com/site/yangdingqi/home/foursquare-dataset "
    "(Foursquare NYC and Tokyo check-ins) and unzip it."
)
MONTHS = {m: i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1)}
N_FIELDS = 8


def parse_timestamp(text: str) -> int:
    """UTC seconds of ``Tue Apr 03 18:00:09 +0000 2012``; ValueError on anything else."""
    parts = text.split()
    if len(parts) != 6 or parts[1] not in MONTHS or len(parts[4]) != 5 or parts[4][0] not in "+-":
        raise ValueError(f"timestamp {text!r} is not like 'Tue Apr 03 18:00:09 +0000 2012'")
    try:
        hh, mm, ss = (int(x) for x in parts[3].split(":"))
        moment = datetime(int(parts[5]), MONTHS[parts[1]], int(parts[2]), hh, mm, ss, tzinfo=timezone.utc)
    except (ValueError, OverflowError) as e:  # a year of 10^11 overflows rather than fails
        raise ValueError(f"timestamp {text!r} is not a date ({e})") from None
    zone = parts[4]
    sign = 1 if zone[0] == "+" else -1
    return plausible_time(int(moment.timestamp()) - sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60), text)


def read_names(path: Path) -> dict[str, str]:
    """venue_id -> name from a UTF-8 CSV with those two columns (FSQ OS Places matched by id)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark would hide the venue_id column
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: bytes invalid in utf-8 ({raw[e.start:e.end]!r}): save the names file "
                        "as UTF-8, or set data.names_file='' to label POIs by category") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        try:
            missing = {"venue_id", "name"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}:1: header lacks column(s) {sorted(missing)}; need venue_id,name")
            return {row["venue_id"]: row["name"].strip() for row in reader if row["name"]}
        except csv.Error as e:  # e.g. an unclosed quote that runs past the field size limit
            # line_num counts the lines of the records read whole: the bad record starts on the next line
            raise DataError(f"{path}:{reader.line_num + 1}: the record starting here is not readable as CSV ({e}): "
                            "fix it, or set data.names_file='' to label POIs by category") from None


def input_files(cfg: DataConfig, folder: Path, root: Path) -> list[Path]:
    """The check-in file, then the names file when configured and present."""
    files = [find_file(folder, f"dataset_TSMC2014_{cfg.city}.txt", HOW_TO_GET)]
    names = root / cfg.names_file if cfg.names_file else None
    if names is not None and not names.is_file():
        log.warning("venue names file %s not found: POIs are labelled by category", names)
    return files + ([names] if names is not None and names.is_file() else [])


def read(files: list[Path], cfg: DataConfig) -> RawCheckins:
    path = files[0]
    bad = BadLines(path, cfg.on_bad_line)
    rows = RowBuffer()
    for lineno, fields in read_tsv(path, file_encoding(path, cfg.encoding, "latin-1"), N_FIELDS, bad):
        user, venue, _cat_id, category, lat, lon, offset, stamp = fields
        if not user.strip() or not venue.strip():
            bad(lineno, "empty userId or venueId")
            continue
        try:
            time = parse_timestamp(stamp)
        except BAD_VALUE as e:
            bad(lineno, f"bad utcTimestamp: {e}")
            continue
        try:
            rows.add(user, venue, category.strip(), parse_coordinate(lat, 90, "latitude"),
                     parse_coordinate(lon, 180, "longitude"), time, parse_offset(offset))
        except BAD_VALUE as e:
            bad(lineno, f"bad latitude/longitude/timezoneOffset: {e}")
    bad.report()
    names = read_names(files[1]) if len(files) > 1 else {}
    return rows.finish(f"foursquare:{cfg.city}", files, bad.count, names)
