"""Peak memory and time of one rl.estimator=expected PPO iteration at the 3% runs' size (issue 24).

16 train prompts x all 5 choices, 2 PPO epochs, the embedded Gemma 3 270M in float32 on the CPU, real NYC
prompts (history 5, 5 candidates, scores shown), the readout choice; the recommender untrained and the
fusion the identity (the reward is 0, the graphs are the same). Run it as a whole process in this tree and
in the commit before, side by side; it prints the process's peak RSS before and after the iteration.

    OMP_NUM_THREADS=2 python benchmarks/expected_ppo_memory.py
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this tree's recpie and the tests' joint-parts builder

import torch  # noqa: E402
from joint_parts import joint_parts  # noqa: E402

from recpie.data.config import DataConfig  # noqa: E402
from recpie.data.load import load_checkin_data  # noqa: E402
from recpie.utils.machine import machine_line  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    root = os.environ.get("RECPIE_DATA_ROOT", str(REPO.parent / "shared" / "data"))
    data = load_checkin_data(DataConfig(source="foursquare", city="NYC", data_root=root, cache_dir=str(tmp / "c")))
    _, trainer, _ = joint_parts(tmp, data, "embedded:gemma3-270m", **{
        "explainer.choice": "readout", "explainer.encoder": "verdict", "explainer.show_scores": True,
        "explainer.history_len": 5, "explainer.num_candidates": 5, "explainer.forward_tokens": 1024,
        "recpie.ppo_iterations": 1, "recpie.rollout_prompts": 16, "rl.estimator": "expected",
        "rl.ppo_epochs": 2, "recpie.sft_steps": 0, "data.max_len": 50})
    opt = torch.optim.AdamW(trainer.explainer.trainable_parameters(), lr=5e-5)
    trainer.prepare(opt)
    before, start = peak_gib(), time.perf_counter()
    trainer.ppo_iteration(opt, 0)
    print(f"{REPO} ({machine_line()}; {torch.get_num_threads()} threads): peak RSS {before:.2f} GiB before the "
          f"iteration, {peak_gib():.2f} GiB after; the iteration {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
