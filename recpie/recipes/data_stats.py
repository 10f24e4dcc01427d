"""Recipe ``data_stats``: preprocess (or load from the cache) and print the dataset's statistics, the machine and
the dtype the explainer would load in under the config (without loading it)."""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from recpie.config import data_config
from recpie.data.load import load_checkin_data
from recpie.data.stats import stats_table
from recpie.utils.machine import machine_line


def machine_lines(cfg: DictConfig) -> str:
    """'machine: <CPU, flags, cores, GPUs>' and 'explainer dtype: <dtype> (<why>)' on this machine."""
    from recpie.explainer.llm import planned_dtype  # transformers and peft: only once the data has loaded

    return f"machine: {machine_line()}\nexplainer dtype: {planned_dtype(cfg.explainer)}"


def run(cfg: DictConfig, run_dir: Path) -> None:
    start = time.perf_counter()
    data = load_checkin_data(data_config(cfg))
    table = stats_table(data) + "\n\n" + machine_lines(cfg)
    (run_dir / "stats.md").write_text(table + "\n")
    print(table)
    print(f"\nloaded in {time.perf_counter() - start:.1f} s")
