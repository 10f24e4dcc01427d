"""Recipe ``data_stats``: preprocess (or load from the cache) and print the dataset's statistics."""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from recpie.config import data_config
from recpie.data.load import load_checkin_data
from recpie.data.stats import stats_table


def run(cfg: DictConfig, run_dir: Path) -> None:
    start = time.perf_counter()
    data = load_checkin_data(data_config(cfg))
    table = stats_table(data)
    (run_dir / "stats.md").write_text(table + "\n")
    print(table)
    print(f"\nloaded in {time.perf_counter() - start:.1f} s")
