"""Session fixtures of check-in data; conftest.py imports them by name, so the suite preprocesses each once.

``nyc_data``: the real NYC data of ../shared/data. ``synthetic_data``: a small CheckinData in the real
TSMC2014 layout (tests/tsmc_synthetic.py: real venues, synthetic users and times) that needs nothing
outside the repository, for unit tests of the backbone, fusion and modules."""
from __future__ import annotations

from pathlib import Path

import pytest
from tsmc_synthetic import write_tsmc

from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData

__all__ = ["nyc_data", "nyc_datamodule_config", "synthetic_data"]


@pytest.fixture(scope="session")
def nyc_datamodule_config(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    """The default NYC config, reading the real data root and caching into a session tmp folder."""
    cache = tmp_path_factory.mktemp("recpie-data-cache")
    return DataConfig(source="foursquare", city="NYC", data_root=str(data_root), cache_dir=str(cache))


@pytest.fixture(scope="session")
def nyc_data(nyc_datamodule_config: DataConfig) -> CheckinData:
    """NYC TSMC2014 processed by the default protocol (1,054 users, 3,962 POIs, ...)."""
    return load_checkin_data(nyc_datamodule_config)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> CheckinData:
    """12 users visiting 6 real NYC venues twice a day, every other day, over 20 days (every split non-empty)."""
    folder = write_tsmc(tmp_path_factory.mktemp("synthetic-tsmc")).parent
    return load_checkin_data(DataConfig(source="foursquare", data_root=str(folder), dataset_dir=str(folder),
                                        names_file="", min_poi_checkins=1, min_user_checkins=1, use_cache=False))
