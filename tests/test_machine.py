"""Issue 25: every run names its machine and the explainer's dtype: provenance.json's ``machine``, the dtype as
reports state it (llm.describe_dtype) and ``data stats``, which prints both without loading the LLM."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from test_explainer_decoding import EPYC_AVX2, XEON_AMX
from tsmc_synthetic import FIXTURE, write_tsmc

import recpie.explainer.llm as llm
import recpie.utils.machine as machine
from recpie.cli import main
from recpie.explainer.llm import describe_dtype, resolve_dtype
from recpie.utils.machine import cpu_features
from recpie.utils.provenance import write_provenance

CPU = torch.device("cpu")


@pytest.fixture
def fake_cpu(monkeypatch):
    """Make this machine's CPU the one of a /proc/cpuinfo text, for every reader of it."""
    def use(cpuinfo: str):
        fake = cpu_features(cpuinfo)
        for module in (machine, llm):
            monkeypatch.setattr(module, "cpu_features", lambda cpuinfo=None: fake)
        monkeypatch.setattr(machine, "cuda_devices", lambda: [])
        return fake
    return use


def test_provenance_names_the_machine(tmp_path, fake_cpu):
    fake_cpu(EPYC_AVX2)
    write_provenance(tmp_path, OmegaConf.create({"name": "demo"}), [FIXTURE], resumed=False)
    record = json.loads((tmp_path / "provenance.json").read_text())["machine"]
    assert record == {"cpu": "AMD EPYC 7B12", "simd_flags": ["avx2"],
                      "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": False,
                      "cpu_count": record["cpu_count"], "cuda_devices": []}
    assert record["cpu_count"] >= 1
    assert "Intel(R) Xeon(R) Platinum 8481C" in machine.machine_line(cpu_features(XEON_AMX))


def test_the_dtype_is_stated_with_its_reason():
    epyc, amx = cpu_features(EPYC_AVX2), cpu_features(XEON_AMX)
    cap = epyc.capability
    assert describe_dtype("auto", resolve_dtype("auto", CPU, epyc), CPU, epyc) == (
        f"float32 (explainer.dtype=auto: no native bf16 on AMD EPYC 7B12, {cap})")
    assert describe_dtype("auto", resolve_dtype("auto", CPU, amx), CPU, amx).startswith(
        "bfloat16 (explainer.dtype=auto: native bf16 on Intel(R) Xeon(R) Platinum 8481C")
    assert describe_dtype("float32", torch.float32, CPU, amx) == "float32 (explainer.dtype=float32)"
    assert describe_dtype("auto", torch.bfloat16, torch.device("cuda")) == (
        "bfloat16 (explainer.dtype=auto: bf16 on CUDA)")


@pytest.mark.parametrize("cpuinfo, dtype", [(EPYC_AVX2, "float32"), (XEON_AMX, "bfloat16")], ids=["epyc", "amx"])
def test_data_stats_prints_the_machine_and_the_explainers_dtype(tmp_path, capsys, fake_cpu, cpuinfo, dtype):
    cpu = fake_cpu(cpuinfo)
    write_tsmc(tmp_path / "foursquare_nyc_tsmc2014")
    assert main(["data", "stats", "nyc_recpie", f"data.data_root={tmp_path}", "data.names_file=",
                 "data.use_cache=false", "data.min_poi_checkins=1", "data.min_user_checkins=1",
                 "explainer.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"\nmachine: {cpu.describe()}; " in out
    assert f"\nexplainer dtype: {dtype} (explainer.dtype=auto: " in out
