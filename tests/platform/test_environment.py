"""environment.json (what a run computed with) and platform.kernels = portable (the same bits on two CPU paths)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedvsr.config import ConfigError, load_config
from fedvsr.platform.environment import (
    KERNEL_ENV_VARS,
    PACKAGES,
    SIMD_FLAGS,
    actor_options,
    add_workers,
    describe,
    kernel_env,
    write_environment,
)

REPO = Path(__file__).resolve().parents[2]
FIELDS = {
    "hostname",
    "os",
    "python",
    *PACKAGES,
    "ffmpeg",
    "libx264",
    "libx265",
    "torch_cpu_capability",
    "torch_blas",
    "torch_mkl",
    "torch_onednn",
    "torch_mkldnn_enabled",
    "torch_threads",
    "torch_deterministic",
    "numpy_simd",
    "cpu_model",
    "cpu_vendor",
    "cpu_id",
    "cpu_simd",
    "cpu_cache",
    "cpus",
    *(f"env.{v}" for v in KERNEL_ENV_VARS),
}


def test_describe_names_versions_kernels_cpu_and_pinning_variables(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    d = describe()
    assert set(d) == FIELDS
    assert d["torch"] == torch.__version__ and d["numpy"] == np.__version__
    assert d["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert d["torch_threads"] == torch.get_num_threads()
    assert d["env.MKL_CBWR"] == "AVX2" and d["env.ATEN_CPU_CAPABILITY"] is None
    assert set((d["cpu_simd"] or "").split()) <= set(SIMD_FLAGS)
    json.dumps(d)  # flat and JSON-ready
    assert all(not isinstance(v, (dict, list)) for v in d.values())


def test_portable_kernels_pin_aten_onednn_mkl_and_numpy():
    from numpy._core._multiarray_umath import __cpu_dispatch__

    above = [f for f in __cpu_dispatch__ if f == "X86_V4" or f.startswith("AVX512")]
    env = {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",
        "MKL_CBWR": "COMPATIBLE,STRICT",
        "NPY_DISABLE_CPU_FEATURES": " ".join(above),
    }
    assert kernel_env("portable") == env
    assert actor_options("portable") == {"runtime_env": {"env_vars": env}}
    assert kernel_env("native") == {} and actor_options("native") == {}  # native leaves the job's environment alone
    with pytest.raises(ValueError, match="platform.kernels = 'fast'; allowed: native, portable"):
        kernel_env("fast")
    with pytest.raises(
        ConfigError, match="platform.kernels = 'fast' is not allowed; expected one of 'native', 'portable'"
    ):
        load_config(None, ["platform.kernels=fast"])


def _worker(**fields):
    return {
        "hostname": "a",
        "torch": "2.13.0",
        "torch_cpu_capability": "AVX2",
        "cpu_simd": "sse4_2 avx fma avx2",
        **fields,
    }


def test_workers_fold_into_flat_fields_and_a_cpu_without_avx2_is_not_pinned(tmp_path):
    path = write_environment(tmp_path, "portable")
    assert path == tmp_path / "environment.json"
    record = add_workers(path, [_worker(), _worker(hostname="b")])
    assert json.loads(path.read_text()) == record
    assert record["kernels"] == "portable" and record["workers"] == 2
    assert record["kernel_env"].startswith("ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ")
    assert record["driver.torch"] == torch.__version__
    assert record["worker.torch"] == "2.13.0"  # the same on every worker: one value
    assert record["worker.hostname"] == ["a", "b"]  # else one per worker, in worker order
    assert record["kernels_pinned"] is True
    old = _worker(torch_cpu_capability="DEFAULT", cpu_simd="sse4_2 avx")
    with pytest.warns(RuntimeWarning, match="a worker's CPU lacks avx2 or fma"):
        assert add_workers(path, [_worker(), old])["kernels_pinned"] is False
    native = write_environment(tmp_path / "n", "native")
    assert add_workers(native, [_worker()])["kernels_pinned"] is None and "kernel_env" in json.loads(native.read_text())


def test_a_resumed_run_keeps_the_first_sessions_environment(tmp_path):
    first = write_environment(tmp_path, "native")
    assert write_environment(tmp_path, "native", resume=True) == tmp_path / "environment-resume1.json"
    assert write_environment(tmp_path, "native", resume=True) == tmp_path / "environment-resume2.json"
    assert json.loads(first.read_text())["kernels"] == "native"


@pytest.mark.slow
def test_a_run_records_the_driver_and_its_workers(fedavg_run):
    out, _ = fedavg_run
    record = json.loads((out / "environment.json").read_text())
    assert record["kernels"] == "native" and record["kernels_pinned"] is None and record["workers"] == 2
    assert {f"driver.{k}" for k in FIELDS} <= set(record) and {f"worker.{k}" for k in FIELDS} <= set(record)
    assert record["worker.torch"] == torch.__version__
    assert record["worker.torch_threads"] == 1  # platform.cpus_per_worker
    assert record["worker.torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


# ------------------------------------------------------------------ two CPUs, emulated by forcing kernels down

#: one "machine": a fresh local Ray started under the environment given to the subprocess, running the tiny preset
#: for 2 rounds natively and in portable mode, each on its own built videos and LR cache, on one worker (the bits do
#: not depend on the number of workers, and each worker is a process to start on both machines)
MACHINE = """
import sys
from pathlib import Path
import ray
from fedvsr.config import load_config
from fedvsr.platform.run import run_experiment
from tests.conftest import tiny_experiment
out = Path(sys.argv[1])
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
for kernels in ("native", "portable"):
    run_experiment(load_config(None, tiny_experiment(out / "data", "fl.rounds=2", f"data.lr_cache={out / kernels}-lr",
                                                     f"platform.kernels={kernels}", "platform.workers=1")),
                   out / kernels)
"""

#: columns that measure time or placement, not the computation
NOT_COMPUTED = {
    "seconds",
    "train_seconds",
    "eval_seconds",
    "updates_per_s",
    "samples_per_s",
    "worker",
    "device",
    "gpu",
    "node",
}  # node: the Ray node id of the worker, new in every Ray session


def _forced_down() -> dict[str, str]:
    """Machine B: this CPU's kernels forced one step down (an AVX2 CPU where this one has AVX-512, else SSE4.1)."""
    import numpy._core._multiarray_umath as npy

    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {
            "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "NPY_DISABLE_CPU_FEATURES": " ".join(
                f for f in npy.__cpu_dispatch__ if f == "X86_V4" or f.startswith("AVX512")
            ),
        }
    return {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NPY_DISABLE_CPU_FEATURES": " ".join(f for f in npy.__cpu_dispatch__ if f != "X86_V2"),
    }


def _bits(run: Path) -> dict[str, object]:
    def rows(name):
        table = pq.read_table(run / name)
        return table.drop_columns([c for c in table.column_names if c in NOT_COMPUTED]).to_pylist()

    return {
        "rounds": rows("rounds.parquet"),
        "clients": rows("clients.parquet"),
        "model": hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest(),
    }


@pytest.mark.slow
def test_portable_kernels_give_the_same_bits_on_two_cpu_paths_and_native_ones_do_not(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for name in KERNEL_ENV_VARS:
        env.pop(name, None)
    machines = {"a": env, "b": {**env, **_forced_down()}}
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", MACHINE, str(tmp_path / m)],
            env=e,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for m, e in machines.items()
    }  # side by side: each its own Ray
    for m, proc in procs.items():
        log = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, f"machine {m}:\n{log[-3000:]}"
    a, b = tmp_path / "a", tmp_path / "b"
    seen = {m: json.loads((tmp_path / m / "native" / "environment.json").read_text()) for m in "ab"}
    assert seen["a"]["worker.env.ONEDNN_MAX_CPU_ISA"] is None
    assert seen["b"]["worker.env.ONEDNN_MAX_CPU_ISA"] == machines["b"]["ONEDNN_MAX_CPU_ISA"]
    assert _bits(a / "portable") == _bits(b / "portable")
    assert _bits(a / "native") != _bits(b / "native")
    pinned = json.loads((b / "portable" / "environment.json").read_text())
    assert pinned["kernels_pinned"] is True and pinned["worker.torch_cpu_capability"] == "AVX2"
