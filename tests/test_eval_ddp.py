"""Under DDP every sample counts exactly once in RankMetric (states concatenated across processes) although
the DistributedSampler pads with repeats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from recpie.evaluation import ranks_from_scores

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys
import torch, torch.distributed as dist
from torch.utils.data import DistributedSampler
from recpie.evaluation import RankMetric, ranks_from_scores

rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
n = 7  # not divisible by 2 processes x batch 2: the sampler pads with repeated samples
scores = torch.arange(n * 5, dtype=torch.float32).reshape(n, 5) % 3
target = torch.arange(n) % 5
ids = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=3))
metric = RankMetric(expected=n)
for s in range(0, len(ids), 2):
    b = torch.tensor(ids[s:s + 2])
    ranks, topk = ranks_from_scores(scores[b], target[b]), scores[b].topk(2).indices
    metric.update(b, ranks, topk)
got_ids, got_ranks, got_topk = metric.compute()
json.dump({"local": len(ids), "ids": got_ids.tolist(), "ranks": got_ranks.tolist(), "topk": got_topk.tolist()},
          open(f"{out}.{rank}", "w"))
dist.destroy_process_group()
'''


def test_two_gloo_processes_count_each_sample_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    init = f"file://{tmp_path / 'rendezvous'}"
    out = tmp_path / "result"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", init, str(out)], env=env,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    results = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    assert sum(r["local"] for r in results) == 8  # 7 samples padded to 8 by the sampler
    n = 7
    scores = torch.arange(n * 5, dtype=torch.float32).reshape(n, 5) % 3
    want = ranks_from_scores(scores, torch.arange(n) % 5).numpy()
    for r in results:
        assert r["ids"] == list(range(7))
        np.testing.assert_allclose(r["ranks"], want)
        assert r["topk"] == scores.topk(2).indices.tolist()
