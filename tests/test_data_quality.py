"""Issue 14, item 4: input that used to give silently wrong data. Doubled rows, a re-saved UTF-8 copy of a
latin-1 file, a latin-1 names file; files built in the real TSMC layout (tests/tsmc_synthetic.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tsmc_synthetic import FIXTURE, tsmc_rows, write_tsmc

from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.data.stats import stats_table
from recpie.errors import DataError


def _config(folder, **overrides) -> DataConfig:
    return DataConfig(source="foursquare", data_root=str(folder), dataset_dir=str(folder), names_file="",
                      min_poi_checkins=1, min_user_checkins=1, use_cache=False, **overrides)


def test_duplicate_checkins_are_counted_and_dropped(tmp_path):
    rows = tsmc_rows()
    clean = load_checkin_data(_config(write_tsmc(tmp_path / "clean").parent))
    doubled = rows + rows[5:12] + rows[5:6]  # 8 repeats, one of them twice
    d = load_checkin_data(_config(write_tsmc(tmp_path / "doubled", doubled).parent))
    assert d.duplicate_checkins == 8 and clean.duplicate_checkins == 0
    np.testing.assert_array_equal(d.poi, clean.poi)
    np.testing.assert_array_equal(d.time, clean.time)
    assert "| duplicate check-ins (same user, venue, second) | 8 |" in stats_table(d)
    kept = load_checkin_data(_config(tmp_path / "doubled", drop_duplicates=False))
    assert kept.duplicate_checkins == 8 and len(kept.poi) == len(clean.poi) + 8


def test_the_shared_nyc_file_has_no_duplicates(nyc_data):
    assert nyc_data.duplicate_checkins == 0


def _with_category(rows: list[bytes], name: bytes) -> list[bytes]:
    first = rows[0].split(b"\t")
    return [b"\t".join(f if i != 3 else name for i, f in enumerate(r.split(b"\t"))) if r.split(b"\t")[1] == first[1]
            else r for r in rows]


def test_a_utf8_copy_of_the_latin1_file_reads_the_same(tmp_path):
    rows = _with_category(tsmc_rows(), "Café".encode("latin-1"))
    original = load_checkin_data(_config(write_tsmc(tmp_path / "latin1", rows).parent))
    resaved = [r.decode("latin-1").encode("utf-8") for r in rows]
    copy = load_checkin_data(_config(write_tsmc(tmp_path / "utf8", resaved).parent))
    assert "Café" in original.catalogue.category_names
    assert copy.catalogue.category_names == original.catalogue.category_names  # not "CafÃ©" and "Café"
    forced = load_checkin_data(_config(tmp_path / "utf8", encoding="latin-1"))
    assert "CafÃ©" in forced.catalogue.category_names  # what the fixed latin-1 reading gave
    with pytest.raises(DataError, match=r"dataset_TSMC2014_NYC.txt:\d+: bytes invalid in utf-8"):
        load_checkin_data(_config(tmp_path / "latin1", encoding="utf-8"))


def test_names_file_in_latin1_names_file_and_line(tmp_path):
    folder = write_tsmc(tmp_path / "data").parent
    venue = FIXTURE.read_bytes().splitlines()[0].split(b"\t")[1]
    (folder / "names.csv").write_bytes(b"venue_id,name\n" + venue + b",Joe's Caf\xe9\n")
    with pytest.raises(DataError, match=r"names.csv:2: bytes invalid in utf-8 .*save the names file as UTF-8"):
        load_checkin_data(dataclasses.replace(_config(folder), names_file="names.csv"))
    (folder / "names.csv").write_bytes(b"venue_id,name\n" + venue + b",Joe's Caf\xc3\xa9\n")
    data = load_checkin_data(dataclasses.replace(_config(folder), names_file="names.csv"))
    assert "Joe's Café" in data.catalogue.names
