"""Issue 26, classes 5 and 6: text that was read wrong without a word (a byte-order mark, a stray byte in a
UTF-8 file, a plain file and a .gz of the same name) and values out of range (time-zone offsets, years and
numbers that overflowed, JSON nested too deep, ratings, empty ids). Every per-line problem goes through the
bad-line policy: it stops naming file and line, or under on_bad_line=skip is skipped and counted.

Inputs are the real-data fixtures of tests/fixtures/checkins/ with small edits (test_data_bad_input.py).
"""
from __future__ import annotations

import codecs
import gzip
import logging
from pathlib import Path

import pytest
from test_data_bad_input import BAD_LINE, FILES, FIXTURES, _dataset, _json, _read, _tsv

from recpie.data.rawio import DataError, file_encoding

# source -> case -> (file index in FILES, edit of line BAD_LINE, words the error must contain)
CASES = {
    "foursquare": {
        "offset_99999": (0, _tsv(6, b"99999"), "offset '99999' minutes is beyond +-840"),  # was accepted
        "offset_841": (0, _tsv(6, b"-841"), "beyond +-840 (+-14 h)"),
        "offset_1e11": (0, _tsv(6, b"100000000000"), "beyond +-840"),  # was an OverflowError in int32
        "offset_underscore": (0, _tsv(6, b"-2_40"), "not a whole number of minutes"),  # int() took it as -240
        "offset_blank": (0, _tsv(6, b""), "not a whole number of minutes"),
        "year_1e11": (0, _tsv(7, b"Tue Apr 03 18:00:09 +0000 100000000000"), "is not a date"),  # OverflowError
        "hour_25": (0, _tsv(7, b"Tue Apr 03 25:00:09 +0000 2012"), "bad utcTimestamp"),
        "latitude_nan": (0, _tsv(4, b"nan"), "latitude 'nan' outside"),
        "longitude_180.5": (0, _tsv(5, b"-180.5"), "longitude '-180.5' outside"),
        "latitude_word": (0, _tsv(4, b"north"), "latitude 'north' is not a number"),
        "empty_user": (0, _tsv(0, b""), "empty userId or venueId"),
        "blank_venue": (0, _tsv(1, b"  "), "empty userId or venueId"),
    },
    "gowalla": {
        "year_1e11": (0, _tsv(1, b"100000000000-10-19T23:55:27Z"), "bad check-in time"),
        "longitude_inf": (0, _tsv(3, b"inf"), "longitude 'inf' outside"),
        "latitude_1e400": (0, _tsv(2, b"1e400"), "outside [-90, 90]"),
        "empty_location": (0, _tsv(4, b""), "empty user or location id"),
        "empty_user": (0, _tsv(0, b""), "empty user or location id"),
    },
    "google_local": {
        "time_1e30": (0, _json("time", 10**30), "outside the years"),
        "nested_review": (0, lambda line: b"[" * 100_000 + b"]" * 100_000, "RecursionError"),  # was uncaught
        "nested_object": (0, lambda line: b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "RecursionError"),
        "nested_meta": (1, lambda line: b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        "huge_integer": (0, lambda line: line.replace(b'"rating": 3', b'"rating": ' + b"9" * 5000), "not usable JSON"),
        "rating_99": (0, _json("rating", 99), "rating is 99, expected a number of stars in [1, 5]"),
        "rating_0": (0, _json("rating", 0), "rating is 0"),
        "rating_text": (0, _json("rating", "five"), 'rating is "five"'),
        "rating_bool": (0, _json("rating", True), "rating is true"),
        "empty_user_id": (0, _json("user_id", " "), "user_id is empty"),
        "empty_gmap_id": (1, _json("gmap_id", ""), "gmap_id is empty"),
        "meta_longitude_1e400": (1, lambda line: line.replace(b'"longitude": -', b'"longitude": -1' + b"0" * 400),
                                 "longitude '-inf' outside"),
    },
}
CASE_IDS = [(s, c) for s, cases in CASES.items() for c in cases]


@pytest.mark.parametrize(("source", "case"), CASE_IDS, ids=[f"{s}-{c}" for s, c in CASE_IDS])
def test_out_of_range_value_is_a_bad_line(tmp_path, source, case, caplog):
    broken, edit, words = CASES[source][case]
    folder = _dataset(tmp_path / "bad", source, broken, edit)
    with pytest.raises(DataError) as err:
        _read(folder, source)
    assert f"{folder / FILES[source][broken]}:{BAD_LINE}: " in str(err.value) and words in str(err.value)
    good = len(_read(_dataset(tmp_path / "good", source), source))
    with caplog.at_level(logging.WARNING):
        raw = _read(folder, source, on_bad_line="skip")
    if broken == 0:
        assert raw.skipped_lines == 1 and len(raw) == good - 1
    else:  # a broken meta line drops that business, and each of its reviews is skipped too
        assert len(raw) < good and raw.skipped_lines == 1 + good - len(raw)
    assert "skipped 1 bad line(s)" in caplog.text


def test_offsets_at_the_edges_are_kept(tmp_path):
    """+14 h and -12 h exist (Kiribati, Baker Island); a sign is allowed."""
    lines = (FIXTURES / FILES["foursquare"][0]).read_bytes().splitlines(keepends=True)
    for i, offset in ((0, b"840"), (1, b"-720"), (2, b"+60")):
        lines[i] = _tsv(6, offset)(lines[i])
    (tmp_path / FILES["foursquare"][0]).write_bytes(b"".join(lines))
    raw = _read(tmp_path, "foursquare")
    assert raw.offset_min[:3].tolist() == [840, -720, 60] and raw.skipped_lines == 0


def _bom(line: bytes) -> bytes:
    return codecs.BOM_UTF8 + line


@pytest.mark.parametrize(("source", "broken"), [("foursquare", 0), ("gowalla", 0), ("google_local", 0),
                                                ("google_local", 1)])
@pytest.mark.parametrize("gz", [False, True])
def test_byte_order_mark_is_not_a_user(tmp_path, monkeypatch, source, broken, gz):
    """A BOM made the first row's user "\\ufeff470" (a phantom user, one check-in lost to the filters) or,
    in JSON, the first line a bad line."""
    monkeypatch.setattr("test_data_bad_input.BAD_LINE", 1)
    clean = _read(_dataset(tmp_path / "clean", source), source)
    raw = _read(_dataset(tmp_path / "bom", source, broken, _bom, gz=gz), source)
    assert raw.user.tolist() == clean.user.tolist() and raw.venue.tolist() == clean.venue.tolist()
    assert raw.category == clean.category and raw.skipped_lines == 0


def test_byte_order_mark_in_names_file(tmp_path):
    from recpie.data.sources.foursquare import read_names

    (tmp_path / "names.csv").write_bytes(codecs.BOM_UTF8 + "venue_id,name\nv1,Café Lalo\n".encode())
    assert read_names(tmp_path / "names.csv") == {"v1": "Café Lalo"}


def _cafe(line: bytes) -> bytes:
    """The category column as "Café" in UTF-8 (a copy of TSMC2014 re-saved by an editor)."""
    return _tsv(3, "Café".encode())(line)


def _tsmc(folder: Path, edits: dict[int, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (FIXTURES / FILES["foursquare"][0]).read_bytes().splitlines(keepends=True)
    for i, edit in edits.items():
        lines[i] = edit(lines[i].rstrip(b"\n")) + b"\n"
    (folder / FILES["foursquare"][0]).write_bytes(b"".join(lines))
    return folder


@pytest.mark.parametrize("stray", [b"\xff", b"\x96", b"\xc3"])  # a lone byte; a cp1252 dash; a cut 2-byte char
def test_stray_byte_in_utf8_file_keeps_utf8_and_names_its_line(tmp_path, caplog, stray):
    """One stray byte switched the whole file to latin-1 ("Café" -> "CafÃ©" on every row) without a word."""
    bad_line = 6
    edits = {i: _cafe for i in (1, 3, 4, 9)} | {bad_line - 1: _tsv(3, b"Deli " + stray + b" Bodega")}
    folder = _tsmc(tmp_path, edits)
    path = folder / FILES["foursquare"][0]
    with caplog.at_level(logging.WARNING):
        assert file_encoding(path, "auto", "latin-1") == "utf-8"
    assert f"{path}: 4 line(s) of UTF-8 text, but 1 line(s) that are not UTF-8 (first: line {bad_line}" in caplog.text
    with pytest.raises(DataError, match=f"{path}:{bad_line}: bytes invalid in utf-8"):
        _read(folder, "foursquare")
    raw = _read(folder, "foursquare", on_bad_line="skip")
    assert raw.skipped_lines == 1 and [raw.category[i] for i in (1, 3, 4)] == ["Café"] * 3
    assert _read(folder, "foursquare", encoding="latin-1").category[1] == "CafÃ©"  # what the user can still ask for


def test_latin1_file_stays_latin1_and_accidental_utf8_pairs_are_named(tmp_path, caplog):
    """TSMC2014 is latin-1: "Caf\\xe9" rows read as "Café" without a warning; a few byte pairs that happen to be
    valid UTF-8 among them are read as latin-1 too, with a warning naming the first."""
    latin = {i: _tsv(3, b"Caf\xe9") for i in (1, 2, 4)}
    with caplog.at_level(logging.WARNING):
        raw = _read(_tsmc(tmp_path / "latin", latin), "foursquare")
    assert [raw.category[i] for i in (1, 2, 4)] == ["Café"] * 3 and not caplog.text
    folder = _tsmc(tmp_path / "mixed", latin | {7: _tsv(3, b"Caf\xc3\xa9")})
    with caplog.at_level(logging.WARNING):
        raw = _read(folder, "foursquare")
    assert raw.category[1] == "Café" and raw.category[7] == "CafÃ©"
    assert "read as latin-1, its source's encoding (3 line(s) are not UTF-8, first: line 2" in caplog.text
    assert "(first: line 8)" in caplog.text and "data.encoding=utf-8" in caplog.text


def test_real_nyc_file_is_latin1_without_a_warning(data_root, caplog):
    path = data_root / "foursquare_nyc_tsmc2014" / "dataset_TSMC2014_NYC.txt"
    with caplog.at_level(logging.WARNING):
        assert file_encoding(path, "auto", "latin-1") == "latin-1"
    assert not caplog.text


@pytest.mark.parametrize("source", FILES)
def test_plain_and_gz_of_different_content_are_refused(tmp_path, source):
    """Both were there and the plain one was read in silence, whatever the .gz held."""
    folder = _dataset(tmp_path, source, gz=True)
    plain = _read(_dataset(tmp_path, source), source)  # now both: the same text, so either is right
    name = FILES[source][0]
    packed = folder / f"{name}.gz"
    assert _read(folder, source).time.tolist() == plain.time.tolist()
    for content in (gzip.compress(b"".join((FIXTURES / name).read_bytes().splitlines(keepends=True)[:-3])),
                    gzip.compress((FIXTURES / name).read_bytes().replace(b"1", b"2", 1)),  # same size, one byte
                    packed.read_bytes()[:-30]):  # a cut download
        packed.write_bytes(content)
        with pytest.raises(DataError, match="are both there and differ") as err:
            _read(folder, source)
        assert str(folder / name) in str(err.value) and str(packed) in str(err.value)


@pytest.mark.parametrize(("content", "line"), [
    (b'venue_id,name\nv1,ok\nv2,"' + b"x" * 200_000 + b"\nv3,z\n", 3),  # an unclosed quote
    (b"venue_id,name\nv1," + b"x" * 200_000 + b"\n", 2),
])
def test_unreadable_names_file_names_its_line(tmp_path, content, line):
    """A csv.Error was a traceback without the file."""
    from recpie.data.sources.foursquare import read_names

    (tmp_path / "names.csv").write_bytes(content)
    with pytest.raises(DataError, match=rf"names.csv:{line}: the record starting here is not readable as CSV "
                                        r"\(field larger than field limit"):
        read_names(tmp_path / "names.csv")
