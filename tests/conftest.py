"""Shared fixtures: where the real data lives, and a marker for slow tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("RECPIE_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real check-in data (../shared/data); tests that need it skip, saying why, when it is absent."""
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set RECPIE_DATA_ROOT")
    return root


from data_fixtures import nyc_data, nyc_datamodule_config, synthetic_data  # noqa: E402,F401  (session fixtures)
