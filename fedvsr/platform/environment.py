"""What a run computed with, and the kernel pinning of ``platform.kernels = portable``.

The same seed and config give bit-identical results on one machine with one set of libraries, but not on
another x86 CPU: torch, oneDNN, MKL and numpy each pick their kernels by the CPU's instruction sets when
they load, and those kernels round differently. Measured on the default experiment
(``benchmarks/repro_cpu_paths.py``, docs/reproducibility.md): oneDNN's convolutions (AVX-512 against AVX2
JIT kernels sum in another order) and MKL's vector math (``torch.sqrt`` of float32 tensors goes to MKL VML,
whose AVX-512 and AVX2 code differ in the last bit: the Charbonnier loss and Adam both take square roots)
change the bits from the first local step; torch's own AVX2 and AVX-512 kernels (ATen) give the same bits
for every op the default model uses.

:func:`describe` lists, in one flat dict, what decides the bits in the calling process: library versions,
torch's CPU capability and build, the CPU model, its SIMD flags and caches, and the environment variables
that pin kernels. A run writes it to ``environment.json`` (:func:`write_environment`): the driver's when the
run starts, then each worker's (the workers are where the kernels run; on a cluster they can be other
machines), as ``worker.<field>``.

``platform.kernels = portable`` starts the coordinator and every worker with :func:`kernel_env` in their
environment (Ray's ``runtime_env``, so the variables are set before torch or numpy load): ATen at AVX2,
oneDNN at AVX2, MKL's conditional numerical reproducibility at its ``COMPATIBLE`` branch (the one Intel
documents as giving the same results on Intel and non-Intel CPUs), numpy without its AVX-512 code, oneDNN's
float32 math strict. Every x86-64 CPU with AVX2 and FMA (Intel since Haswell, AMD since Zen) then runs the
same code; on a CPU without AVX2 the pinning cannot hold, and ``environment.json`` says so
(``kernels_pinned: false``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

from fedvsr.config import KERNELS
from fedvsr.platform.results import write_json_atomic

#: environment variables read by torch, oneDNN, MKL, OpenMP and numpy when they load, recorded as ``env.<name>``
KERNEL_ENV_VARS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "NPY_DISABLE_CPU_FEATURES",
)

#: library versions recorded (distribution names)
PACKAGES = ("torch", "numpy", "scipy", "av", "ray", "ptwt", "numba", "pyarrow")

#: CPU flags that decide which kernels the libraries pick (the rest of /proc/cpuinfo's flags are left out)
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
)

#: what portable mode needs of the CPU: ATen's and oneDNN's AVX2 kernels use AVX2 and FMA
PORTABLE_NEEDS = ("avx2", "fma")


def kernel_env(kernels: str) -> dict[str, str]:
    """The environment variables that ``platform.kernels = kernels`` sets in the coordinator and every worker."""
    if kernels not in KERNELS:
        raise ValueError(f"platform.kernels = {kernels!r}; allowed: {', '.join(KERNELS)}")
    if kernels == "native":
        return {}
    return {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",
        "MKL_CBWR": "COMPATIBLE,STRICT",
        "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_above_avx2()),
    }


def actor_options(kernels: str) -> dict[str, Any]:
    """Ray actor options that start the actor's process with :func:`kernel_env` (nothing for ``native``, so the
    actor inherits the job's environment exactly as before). Ray merges these ``env_vars`` into the job's."""
    env = kernel_env(kernels)
    return {"runtime_env": {"env_vars": env}} if env else {}


def numpy_above_avx2() -> list[str]:
    """The CPU features numpy dispatches to above AVX2 in this build (numpy 2.4: ``X86_V4``, ``AVX512_ICL``,
    ``AVX512_SPR``; older builds name ``AVX512F``, ``AVX512_SKX``...), as ``NPY_DISABLE_CPU_FEATURES`` takes them.
    Naming one this build does not dispatch to gives an ImportWarning, so the list comes from numpy itself."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    return [f for f in __cpu_dispatch__ if f == "X86_V4" or f.startswith("AVX512")]


# ---------------------------------------------------------------------------------------------- describing


def describe() -> dict[str, Any]:
    """What decides the bits of this process's results, as one flat dict (JSON-ready)."""
    import numpy as np
    import torch

    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        **_codecs(),
        **_torch_build(torch),
        "numpy_simd": " ".join(f for f, on in _numpy_features(np).items() if on),
        **_cpu(),
        **{f"env.{name}": os.environ.get(name) for name in KERNEL_ENV_VARS},
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _codecs() -> dict[str, Any]:
    """PyAV's FFmpeg version and the build numbers of its bundled libx264 / libx265 (from their file names in
    the wheel's ``av.libs``: ``libx264-<hash>.so.165`` is x264 build 165), None where not readable."""
    try:
        import av
    except ImportError:
        return {"ffmpeg": None, "libx264": None, "libx265": None}
    libs = Path(av.__file__).parent.parent / "av.libs"
    names = os.listdir(libs) if libs.is_dir() else []

    def build(lib: str) -> str | None:
        found = [m.group(1) for n in names if (m := re.match(rf"{lib}-[0-9a-f]+\.so\.(\d+)", n))]
        return found[0] if found else None

    return {
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "libx264": build("libx264"),
        "libx265": build("libx265"),
    }


def _torch_build(torch) -> dict[str, Any]:
    """torch's CPU capability (the ATen kernels it runs), its BLAS, MKL and oneDNN versions and switches."""
    show = torch.__config__.show()

    def find(pattern: str) -> str | None:
        m = re.search(pattern, show)
        return m.group(1) if m else None

    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_blas": find(r"BLAS_INFO=(\w+)"),
        "torch_mkl": find(r"Math Kernel Library Version ([\w.]+)") if torch.backends.mkl.is_available() else None,
        "torch_onednn": find(r"MKL-DNN v([\w.]+)") if torch.backends.mkldnn.is_available() else None,
        "torch_mkldnn_enabled": bool(torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()),
        "torch_threads": torch.get_num_threads(),
        "torch_deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def _numpy_features(np) -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        return {}
    return {f: bool(__cpu_features__.get(f)) for f in __cpu_dispatch__}


def _cpu() -> dict[str, Any]:
    """The CPU's model, vendor, SIMD flags (:data:`SIMD_FLAGS` it has) and per-core caches (oneDNN sizes some
    blockings by them), from ``/proc/cpuinfo`` and sysfs on Linux; elsewhere what ``platform`` knows."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor is enough
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": info.get("vendor_id"),
        "cpu_id": (
            f"family {info['cpu family']} model {info['model']} stepping {info.get('stepping', '?')}"
            if "cpu family" in info and "model" in info
            else None
        ),
        "cpu_simd": " ".join(f for f in SIMD_FLAGS if f in flags) if flags else None,
        "cpu_cache": _caches(),
        "cpus": os.cpu_count(),
    }


def _caches() -> str | None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    parts = []
    for index in sorted(base.glob("index*")):
        try:
            level, kind, size = ((index / n).read_text().strip() for n in ("level", "type", "size"))
        except OSError:
            continue
        parts.append(f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}")
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------- writing


def write_environment(out: str | os.PathLike, kernels: str, resume: bool = False) -> Path:
    """Write the driver's :func:`describe` (and ``platform.kernels``) to ``out/environment.json``; a resumed run
    keeps the first session's file and writes ``environment-resume<k>.json``. Returns the path written."""
    out = Path(out)
    path = out / "environment.json"
    k = 0
    while resume and path.exists():
        k += 1
        path = out / f"environment-resume{k}.json"
    record = {
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernels": kernels,
        "kernel_env": " ".join(f"{k}={v}" for k, v in kernel_env(kernels).items()),
        **{f"driver.{k}": v for k, v in describe().items()},
    }
    write_json_atomic(path, record)
    return path


def add_workers(path: str | os.PathLike, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Add the workers' :func:`describe` to the ``environment.json`` at ``path``: ``worker.<field>`` is the value
    when every worker has the same, else the list of values in worker order. ``kernels_pinned`` says whether a
    portable run really runs the pinned kernels everywhere (False on a CPU without AVX2 and FMA, which then
    warns); None for native. Returns the record."""
    path = Path(path)
    record = json.loads(path.read_text())
    record["workers"] = len(workers)
    for key in dict.fromkeys(k for w in workers for k in w):
        values = [w.get(key) for w in workers]
        record[f"worker.{key}"] = values[0] if all(v == values[0] for v in values) else values
    record["kernels_pinned"] = _pinned(record["kernels"], workers)
    if record["kernels_pinned"] is False:
        warnings.warn(
            f"platform.kernels = portable, but a worker's CPU lacks {' or '.join(PORTABLE_NEEDS)} "
            f"(torch runs {record['worker.torch_cpu_capability']}): its bits will differ from an AVX2 "
            f"machine's; see {path}",
            RuntimeWarning,
            stacklevel=2,
        )
    write_json_atomic(path, record)
    return record


def _pinned(kernels: str, workers: list[dict[str, Any]]) -> bool | None:
    if kernels == "native":
        return None
    return all(
        w.get("torch_cpu_capability") == "AVX2" and all(f in (w.get("cpu_simd") or "").split() for f in PORTABLE_NEEDS)
        for w in workers
    )


if __name__ == "__main__":  # python -m fedvsr.platform.environment: what this machine computes with
    json.dump(describe(), sys.stdout, indent=2)
    print()
