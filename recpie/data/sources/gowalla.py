"""Gowalla, SNAP layout: ``loc-gowalla_totalCheckins.txt`` (Cho et al., KDD 2011).

Tab-separated, no header, 5 columns: user, ISO-8601 UTC time (``2010-10-19T23:55:27Z``), latitude,
longitude, location id. No time offset: local time comes from the coordinates' time zone. No venue
names and no categories: the catalogue labels a POI ``place <location id>``.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from recpie.data.config import DataConfig
from recpie.data.raw import BAD_VALUE, RawCheckins, RowBuffer, parse_coordinate, plausible_time
from recpie.data.rawio import BadLines, file_encoding, find_file, read_tsv

HOW_TO_GET = "Download loc-gowalla_totalCheckins.txt.gz from https://snap.stanford.edu/data/loc-gowalla.html."
N_FIELDS = 5


def parse_iso(text: str) -> int:
    """UTC seconds of ``2010-10-19T23:55:27Z``; ValueError unless it is an explicit UTC time."""
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not ISO-8601 UTC like '2010-10-19T23:55:27Z'")
    return plausible_time(int(datetime.fromisoformat(text).timestamp()), text)


def input_files(cfg: DataConfig, folder: Path, root: Path) -> list[Path]:
    return [find_file(folder, "loc-gowalla_totalCheckins.txt", HOW_TO_GET)]


def read(files: list[Path], cfg: DataConfig) -> RawCheckins:
    path = files[0]
    bad = BadLines(path, cfg.on_bad_line)
    rows = RowBuffer()
    for lineno, fields in read_tsv(path, file_encoding(path, cfg.encoding, "utf-8"), N_FIELDS, bad):
        user, stamp, lat, lon, location = fields
        if not user.strip() or not location.strip():
            bad(lineno, "empty user or location id")
            continue
        try:
            time = parse_iso(stamp)
        except BAD_VALUE as e:
            bad(lineno, f"bad check-in time: {e}")
            continue
        try:
            rows.add(user, location, "", parse_coordinate(lat, 90, "latitude"),
                     parse_coordinate(lon, 180, "longitude"), time, None)
        except BAD_VALUE as e:
            bad(lineno, f"bad latitude/longitude: {e}")
    bad.report()
    return rows.finish("gowalla", files, bad.count)
