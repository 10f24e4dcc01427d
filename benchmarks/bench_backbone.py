"""Train the backbone to its best checkpoint on NYC and print a Markdown table of cost and quality.

    python benchmarks/bench_backbone.py [key=value ...]   (overrides of the nyc_baselines experiment)

Reports wall time of the fit (to early stopping), epochs, peak RSS, the machine's load average (other
jobs on a shared CPU slow training down) and val/test metrics of the best checkpoint.
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_modules import CheckinDataModule  # noqa: E402
from recpie.config import data_config, load_experiment  # noqa: E402
from recpie.evaluation.ranking import metrics_from_ranks  # noqa: E402
from recpie.evaluation.tables import markdown_table  # noqa: E402
from recpie.recipes.baselines import fit_backbone  # noqa: E402


def main(argv: list[str]) -> int:
    cfg = load_experiment("nyc_baselines", ["run.resume=false", *argv])
    load_before = os.getloadavg()
    start = time.perf_counter()
    dm = CheckinDataModule(data_config(cfg))
    dm.prepare_data()
    dm.setup()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit_backbone(cfg, dm, int(cfg.run.seeds[0]), Path(tmp) / "bench")
    total = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    test = metrics_from_ranks(res["ranks"])
    rows = [["fit wall time (s)", f"{res['fit_seconds']:.0f}"], ["total wall time (s)", f"{total:.0f}"],
            ["epochs run", res["epochs"]], ["peak RSS (GiB)", f"{peak_gib:.2f}"],
            ["load average before / after (1 min)", f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}"],
            ["CPU threads (torch)", __import__("torch").get_num_threads()],
            ["best val MRR", f"{res['best_val_mrr']:.4f}"],
            *[[f"test {k}", f"{v:.4f}"] for k, v in test.items()]]
    print(markdown_table(["NYC backbone, seed " + str(cfg.run.seeds[0]), "value"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
