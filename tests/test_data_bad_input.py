"""Bad input, every reader: a clear error naming file and line, or (on_bad_line=skip) a counted skip.

Inputs are the fixtures in tests/fixtures/checkins/ (cut from the real files) with one line broken.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from recpie.data.config import DataConfig, resolve
from recpie.data.load import load_checkin_data
from recpie.data.rawio import DataError
from recpie.data.sources import SOURCES

FIXTURES = Path(__file__).parent / "fixtures" / "checkins"
FILES = {
    "foursquare": ("dataset_TSMC2014_NYC.txt",),
    "gowalla": ("loc-gowalla_totalCheckins.txt",),
    "google_local": ("review-Vermont.json", "meta-Vermont.json"),
}
BAD_LINE = 3  # the 1-based line each case breaks


def _tsv(column: int | None, value: bytes | None = None):
    """Replace tab field ``column`` by ``value``, or drop the last field when column is None."""
    def edit(line: bytes) -> bytes:
        fields = line.split(b"\t")
        if column is None:
            return b"\t".join(fields[:-1])
        fields[column] = value
        return b"\t".join(fields)
    return edit


def _json(key: str, value=None, drop: bool = False):
    def edit(line: bytes) -> bytes:
        record = json.loads(line)
        if drop:
            del record[key]
        else:
            record[key] = value
        return json.dumps(record).encode()
    return edit


# source -> case -> (file index in FILES, line edit, words the error must contain)
CASES = {
    "foursquare": {
        "field_count": (0, _tsv(None), "7 tab-separated fields, expected 8"),
        "timestamp": (0, _tsv(7, b"Tue Apr 33 18:00:09 +0000 2012"), "bad utcTimestamp"),
        "timestamp_format": (0, _tsv(7, b"2012-04-03 18:00:09"), "bad utcTimestamp"),
        "coordinate": (0, _tsv(4, b"north"), "bad latitude"),
        "offset": (0, _tsv(6, b"EST"), "timezoneOffset"),
        "year_cut": (0, _tsv(7, b"Tue Apr 03 18:00:09 +0000 20"), "outside the years 2000-"),  # was 20 AD
    },
    "gowalla": {
        "field_count": (0, _tsv(None), "4 tab-separated fields, expected 5"),
        "timestamp": (0, _tsv(1, b"2010-13-20T06:22:17Z"), "bad check-in time"),
        "coordinate": (0, _tsv(2, b"95.0"), "latitude '95.0' outside"),
        "encoding": (0, lambda line: line.replace(b"\t", b"\t\xff", 1), "bytes invalid in utf-8"),
        "year": (0, _tsv(1, b"1999-10-19T23:55:27Z"), "outside the years 2000-"),
    },
    "google_local": {
        "missing_key": (0, _json("gmap_id", drop=True), "lacks key(s) ['gmap_id']"),
        "timestamp": (0, _json("time", "2020-01-01"), "not a positive integer of milliseconds"),
        "unknown_place": (0, _json("gmap_id", "0x0:0x0"), "is not in meta-Vermont.json"),
        "not_json": (0, lambda line: line[:40], "not valid JSON"),
        "encoding": (0, lambda line: line.replace(b"Reviewer", b"Revi\xc3ewer"), "bytes invalid in utf-8"),
        "meta_coordinate": (1, _json("latitude", 123.0), "latitude '123.0' outside"),
        # a string where the list belongs was read as its first letter: category "R"
        "category_string": (1, _json("category", "Restaurant"), 'category is "Restaurant", expected a list'),
        "category_numbers": (1, _json("category", [1, 2]), "category is [1, 2], expected a list of strings"),
        "name_type": (1, _json("name", 5), "name is 5, expected a string or null"),
        "user_id_type": (0, _json("user_id", [1]), "user_id is [1], expected a string or integer"),
        "time_1970": (0, _json("time", 20000), "outside the years 2000-"),
    },
}


def _config(folder: Path, source: str, **overrides) -> DataConfig:
    city = "Vermont" if source == "google_local" else "NYC"
    return resolve(DataConfig(source=source, city=city, data_root=str(folder), dataset_dir=str(folder),
                              names_file="", use_cache=False, **overrides))


def _dataset(tmp_path: Path, source: str, broken: int | None = None, edit=None, gz: bool = False) -> Path:
    """Copy the source's fixtures into tmp_path, breaking line BAD_LINE of file ``broken``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(FILES[source]):
        lines = (FIXTURES / name).read_bytes().splitlines(keepends=True)
        if i == broken:
            lines[BAD_LINE - 1] = edit(lines[BAD_LINE - 1].rstrip(b"\n")) + b"\n"
        data = b"".join(lines)
        if gz:
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / name).write_bytes(data)
    return tmp_path


def _read(folder: Path, source: str, **overrides):
    cfg = _config(folder, source, **overrides)
    return SOURCES[source].read(SOURCES[source].input_files(cfg, folder, folder), cfg)


CASE_IDS = [(s, c) for s, cases in CASES.items() for c in cases]


@pytest.mark.parametrize(("source", "case"), CASE_IDS, ids=[f"{s}-{c}" for s, c in CASE_IDS])
def test_bad_line_stops_naming_file_and_line(tmp_path, source, case):
    broken, edit, words = CASES[source][case]
    folder = _dataset(tmp_path, source, broken, edit)
    with pytest.raises(DataError) as err:
        _read(folder, source)
    assert f"{folder / FILES[source][broken]}:{BAD_LINE}: " in str(err.value)
    assert words in str(err.value) and "on_bad_line=skip" in str(err.value)


@pytest.mark.parametrize(("source", "case"), CASE_IDS, ids=[f"{s}-{c}" for s, c in CASE_IDS])
def test_bad_line_skipped_and_counted(tmp_path, source, case, caplog):
    broken, edit, words = CASES[source][case]
    good = len(_read(_dataset(tmp_path / "good", source), source))
    folder = _dataset(tmp_path, source, broken, edit)
    with caplog.at_level(logging.WARNING):
        raw = _read(folder, source, on_bad_line="skip")
    if broken == 0:
        assert raw.skipped_lines == 1 and len(raw) == good - 1
    else:  # a broken meta line drops that business, and then each of its reviews is skipped too
        assert len(raw) < good and raw.skipped_lines == 1 + good - len(raw)
    assert "skipped 1 bad line(s)" in caplog.text and words in caplog.text


@pytest.mark.parametrize("source", FILES)
def test_missing_file_says_where_to_get_it(tmp_path, source):
    with pytest.raises(DataError, match="not found") as err:
        _read(tmp_path, source)
    assert str(tmp_path / FILES[source][0]) in str(err.value) and "Download" in str(err.value)


@pytest.mark.parametrize("source", FILES)
def test_gzip_reads_like_plain_and_truncated_gzip_stops(tmp_path, source):
    plain = _read(_dataset(tmp_path / "plain", source), source)
    folder = _dataset(tmp_path, source, gz=True)
    packed = _read(folder, source)
    assert packed.time.tolist() == plain.time.tolist() and packed.venue.tolist() == plain.venue.tolist()
    first = folder / f"{FILES[source][0]}.gz"
    first.write_bytes(first.read_bytes()[:-30])
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match="truncated or corrupt gzip") as err:
            _read(folder, source, on_bad_line=mode)
        assert str(first) in str(err.value)


@pytest.mark.parametrize("source", FILES)
def test_empty_after_filtering_stops(tmp_path, source):
    folder = _dataset(tmp_path, source)
    with pytest.raises(DataError, match="no check-ins left after the k-core filter") as err:
        load_checkin_data(_config(folder, source, min_poi_checkins=1000))
    assert FILES[source][0] in str(err.value)


def test_only_bad_lines_stops(tmp_path):
    (tmp_path / "loc-gowalla_totalCheckins.txt").write_text("1\tyesterday\t1\t2\t3\n")
    with pytest.raises(DataError, match=r"no valid check-in lines \(1 skipped\)"):
        _read(tmp_path, "gowalla", on_bad_line="skip")


def test_latin1_decodes_every_byte(tmp_path):
    folder = _dataset(tmp_path, "foursquare", 0, _tsv(3, b"Caf\xe9"))
    raw = _read(folder, "foursquare")
    assert raw.category[BAD_LINE - 1] == "Café" and raw.skipped_lines == 0


def test_unknown_settings_are_rejected():
    for bad in (dict(source="yelp"), dict(on_bad_line="ignore"), dict(train_targets="some"),
                dict(val_cut=0.95, test_cut=0.9)):
        with pytest.raises(ValueError, match="data\\."):
            resolve(DataConfig(**bad))

