"""Standalone DDP run of the joint module (Lightning's ddp launcher re-executes this file per rank).

usage: ddp_recpie.py OUT_DIR LLM_DIR DATA_CACHE — writes OUT_DIR/rank<r>.json with what the test checks.
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for small_cfg

from test_recpie_module import small_cfg  # noqa: E402

from recpie.components.backbone import Backbone  # noqa: E402
from recpie.config import data_config  # noqa: E402
from recpie.data.load import load_checkin_data  # noqa: E402
from recpie.recipes.recpie import fit_variant  # noqa: E402
from recpie.utils.seeds import subset_ids  # noqa: E402


def checksum(tensors) -> int:
    return zlib.crc32(b"".join(t.detach().float().cpu().numpy().tobytes() for t in tensors))


def main(out: Path, llm_dir: Path, data_cache: Path) -> None:
    cfg = small_cfg(out, llm_dir, **{"trainer.strategy": "ddp", "trainer.devices": 2,
                                      "data.cache_dir": str(data_cache), "recpie.test_samples": 7})
    data = load_checkin_data(data_config(cfg))
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)
    eval_ids = {"val": subset_ids(len(data.splits["val"]), 8, 1), "test": subset_ids(len(data.splits["test"]), 7, 1)}
    result = fit_variant(cfg, data, backbone, eval_ids, out, "recpie", seed=0)
    module = result["module"]
    rank = module.global_rank
    lora = [p for n, p in module.explainer.model.named_parameters() if "lora_" in n]
    record = {
        "world": module.trainer.world_size,
        "test_ids": result["ids"].tolist(), "expected_ids": eval_ids["test"].tolist(),
        "lora": checksum(lora), "backbone": checksum(module.backbone.parameters()),
        "train_store": checksum([module.store.z["train"]]), "coverage": module.store.coverage("train"),
        "rollout_ids": module.explainer_trainer.draw_train_ids(4, "ppo0").tolist(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
