"""Google Local (UCSD, 2021): ``review-<State>.json(.gz)`` joined with ``meta-<State>.json(.gz)``.

Both are JSON Lines in UTF-8. A review (user_id, time in ms, gmap_id, ...) is a check-in at the business
``gmap_id``; the meta file gives its name, coordinates and category list, whose first entry is taken as
the main category. The official meta file repeats some gmap_ids: the first record wins. Local time comes
from the coordinates' time zone.
"""
from __future__ import annotations

import json
from pathlib import Path

from recpie.data.config import DataConfig
from recpie.data.raw import BAD_VALUE, RawCheckins, RowBuffer, parse_coordinate, plausible_time
from recpie.data.rawio import BadLines, file_encoding, find_file, read_lines

HOW_TO_GET = (
    "Download review-<State>.json.gz and meta-<State>.json.gz from "
    "https://datarepo.eng.ucsd.edu/mcauley_group/gdrive/googlelocal/ (Google Local Data 2021)."
)


def input_files(cfg: DataConfig, folder: Path, root: Path) -> list[Path]:
    """[reviews, meta]; meta comes from ``meta_dir`` when set, else next to the reviews."""
    meta_folder = root / cfg.meta_dir if cfg.meta_dir else folder
    return [find_file(folder, f"review-{cfg.city}.json", HOW_TO_GET),
            find_file(meta_folder, f"meta-{cfg.city}.json", HOW_TO_GET)]


# the JSON type each field must have (a string where a list belongs would read "Restaurant" as category "R")
SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "gmap_id": ((str,), "a string"), "user_id": ((str, int), "a string or integer"),
    "name": ((str, type(None)), "a string or null"), "category": ((list, type(None)), "a list of strings or null"),
}


RATINGS = (1, 5)  # Google's stars: a review's rating, when given, is one of 1..5


def _schema_problem(record: dict) -> str | None:
    for key, (types, text) in SCHEMA.items():
        value = record.get(key)
        if key in record and (not isinstance(value, types) or isinstance(value, bool)):
            return f"{key} is {json.dumps(value)[:40]}, expected {text}"
    if not all(isinstance(c, str) for c in record.get("category") or []):
        return f"category is {json.dumps(record['category'])[:40]}, expected a list of strings or null"
    for key in ("gmap_id", "user_id"):
        if key in record and not str(record[key]).strip():
            return f"{key} is empty"
    rating = record.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, (int, float))
                               or not RATINGS[0] <= rating <= RATINGS[1]):
        return f"rating is {json.dumps(rating)[:40]}, expected a number of stars in {list(RATINGS)} or null"
    return None


def _json_lines(path: Path, bad: BadLines, keys: tuple[str, ...], encoding: str):
    """(line number, record) of each line that is a JSON object with every key in ``keys``, each of its
    SCHEMA type."""
    for lineno, line in read_lines(path, file_encoding(path, encoding, "utf-8"), bad):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad(lineno, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        except (ValueError, RecursionError) as e:  # a 5,000-digit number; arrays nested 10^5 deep
            bad(lineno, f"not usable JSON ({type(e).__name__}: {str(e)[:80]})")
            continue
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            bad(lineno, f"JSON record lacks key(s) {missing}")
            continue
        problem = _schema_problem(record)
        if problem:
            bad(lineno, problem)
            continue
        yield lineno, record


def read_meta(path: Path, bad: BadLines, encoding: str) -> dict[str, tuple[str, str, float, float]]:
    """gmap_id -> (name, main category, latitude, longitude)."""
    meta: dict[str, tuple[str, str, float, float]] = {}
    for lineno, rec in _json_lines(path, bad, ("gmap_id", "name", "latitude", "longitude", "category"), encoding):
        try:
            lat = parse_coordinate(str(rec["latitude"]), 90, "latitude")
            lon = parse_coordinate(str(rec["longitude"]), 180, "longitude")
        except BAD_VALUE as e:
            bad(lineno, f"bad coordinate: {e}")
            continue
        categories = rec["category"] or []
        meta.setdefault(rec["gmap_id"], ((rec["name"] or "").strip(), categories[0] if categories else "",
                                         lat, lon))
    return meta


def read(files: list[Path], cfg: DataConfig) -> RawCheckins:
    review_path, meta_path = files
    meta_bad = BadLines(meta_path, cfg.on_bad_line)
    meta = read_meta(meta_path, meta_bad, cfg.encoding)
    meta_bad.report()
    bad = BadLines(review_path, cfg.on_bad_line)
    rows = RowBuffer()
    for lineno, rec in _json_lines(review_path, bad, ("user_id", "time", "gmap_id"), cfg.encoding):
        place = meta.get(rec["gmap_id"])
        if place is None:
            bad(lineno, f"gmap_id {rec['gmap_id']!r} is not in {meta_path.name}")
            continue
        if not isinstance(rec["time"], int) or isinstance(rec["time"], bool) or rec["time"] <= 0:
            bad(lineno, f"time {rec['time']!r} is not a positive integer of milliseconds")
            continue
        try:
            plausible_time(rec["time"] // 1000, str(rec["time"]))
        except BAD_VALUE as e:
            bad(lineno, f"bad time: {e}")
            continue
        _, category, lat, lon = place
        rows.add(str(rec["user_id"]), rec["gmap_id"], category, lat, lon, rec["time"] // 1000, None)
    bad.report()
    names = {gmap_id: place[0] for gmap_id, place in meta.items()}
    return rows.finish(f"google_local:{cfg.city}", files, bad.count + meta_bad.count, names)
