"""The machine a run ran on: its CPU's model and SIMD features, torch's CPU kernels, its cores and GPUs.

Every timing names the CPU and its features (provenance.json's ``machine``, results.md's protocol); the CPU's
native bf16 matmuls decide the explainer's dtype under explainer.dtype=auto (recpie.explainer.llm.resolve_dtype).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

# /proc/cpuinfo flags that tell how a CPU runs the LLM's matmuls: the first two are native bf16 ones
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
SIMD_FLAGS = (*BF16_FLAGS, "amx_tile", "amx_int8", "avx512f", "avx2")


@dataclass(frozen=True)
class CpuFeatures:
    """What decides the CPU's dtype under explainer.dtype=auto, and what a run records about its CPU."""

    model: str  # lscpu's "model name"
    flags: tuple[str, ...]  # the SIMD_FLAGS the CPU has
    capability: str  # torch.backends.cpu.get_cpu_capability(): the widest ISA of torch's own kernels

    @property
    def native_bf16(self) -> bool:
        """bf16 matmuls in hardware (AMX-BF16 or AVX512-BF16): there bf16 beats float32 (Gemma 3 270M's no-grad
        forward 2.9x on an AMX Xeon, docs/results.md); elsewhere bf16 is emulated and slower than float32."""
        return any(f in self.flags for f in BF16_FLAGS)

    def describe(self) -> str:
        return (f"{self.model or 'unknown CPU'}; flags {' '.join(self.flags) or 'none of ' + '/'.join(SIMD_FLAGS)}; "
                f"torch capability {self.capability}; native bf16 {'yes' if self.native_bf16 else 'no'}")


def cpu_features(cpuinfo: str | None = None) -> CpuFeatures:
    """The CPU's features, from ``cpuinfo`` (the text of /proc/cpuinfo; read here when None, empty where absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's block names them all
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    have = set(fields.get("flags", "").split())
    return CpuFeatures(fields.get("model name", ""), tuple(f for f in SIMD_FLAGS if f in have),
                       torch.backends.cpu.get_cpu_capability())


def cuda_devices() -> list[str]:
    """The names of the visible CUDA devices (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_record(cpu: CpuFeatures | None = None) -> dict:
    """provenance.json's ``machine``: the CPU (``cpu``, default this machine's), its SIMD flags, torch's CPU
    capability, whether it has native bf16 matmuls, os.cpu_count() and the CUDA devices' names."""
    cpu = cpu or cpu_features()
    return {"cpu": cpu.model or None, "simd_flags": list(cpu.flags), "torch_cpu_capability": cpu.capability,
            "native_bf16": cpu.native_bf16, "cpu_count": os.cpu_count(), "cuda_devices": cuda_devices()}


def machine_line(cpu: CpuFeatures | None = None) -> str:
    """One line for reports, e.g. 'AMD EPYC 7B12; flags avx2; torch capability AVX2; native bf16 no; 2 CPUs;
    CUDA none'."""
    cpu = cpu or cpu_features()
    return f"{cpu.describe()}; {os.cpu_count()} CPUs; CUDA {', '.join(cuda_devices()) or 'none'}"
