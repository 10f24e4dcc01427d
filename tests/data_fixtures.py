"""Session fixtures of the real NYC data; import them in conftest.py (``from tests.data_fixtures import *``
or by name) so the suite preprocesses NYC once, into a per-session cache folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.data.types import CheckinData

__all__ = ["nyc_data", "nyc_datamodule_config"]


@pytest.fixture(scope="session")
def nyc_datamodule_config(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    """The default NYC config, reading the real data root and caching into a session tmp folder."""
    cache = tmp_path_factory.mktemp("recpie-data-cache")
    return DataConfig(source="foursquare", city="NYC", data_root=str(data_root), cache_dir=str(cache))


@pytest.fixture(scope="session")
def nyc_data(nyc_datamodule_config: DataConfig) -> CheckinData:
    """NYC TSMC2014 processed by the default protocol (1,054 users, 3,962 POIs, ...)."""
    return load_checkin_data(nyc_datamodule_config)
