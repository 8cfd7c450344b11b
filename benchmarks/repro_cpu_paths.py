"""How far the numbers move on another CPU: the default experiment (``fedvsr simulate``) run with the
CPU kernels this machine picks, and again with the kernel choice forced down to what an older or
different x86 CPU would run, each in a fresh process.

    python benchmarks/repro_cpu_paths.py [--out benchmarks/results/repro_cpu_paths] [--set key=value ...]

Variants (environment variables read by torch, oneDNN, MKL and numpy when they load; the Ray workers
inherit them from the driver):

- ``native``: nothing set (this machine: AVX2).
- ``native-again``: the same, run again (bit-identical expected: same machine, same libraries).
- ``aten-default``: ``ATEN_CPU_CAPABILITY=default``: torch's own vectorised kernels without AVX2.
- ``sse41``: as ``aten-default``, plus ``DNNL_MAX_CPU_ISA=SSE41`` (oneDNN convolutions),
  ``MKL_ENABLE_INSTRUCTIONS=SSE4_2`` (BLAS) and ``NPY_DISABLE_CPU_FEATURES`` (numpy without its
  AVX2 / AVX-512 code: numpy 2.4 names the groups X86_V3, X86_V4).

Writes ``repro.json`` (per variant: final / best PSNR and SSIM, wall seconds; per pair with ``native``:
whether every round is bit-identical, the largest per-round |delta| of PSNR, SSIM and train loss) and
each variant's ``rounds.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

VARIANTS: dict[str, dict[str, str]] = {
    "native": {},
    "native-again": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
              "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
}
COLUMNS = ("psnr", "ssim", "train_loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "repro_cpu_paths"))
    parser.add_argument("--set", action="append", default=[], help="config overrides for every variant")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedvsr-repro-"))
    result: dict = {"overrides": args.set, "variants": {}, "against_native": {}}
    rounds: dict[str, list[dict]] = {}
    for name, env in VARIANTS.items():
        run = work / name
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fedvsr.cli", "simulate", "--out", str(run),
                               *(f"--set={s}" for s in args.set)], env={**os.environ, **env},
                              capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        shutil.copy(run / "rounds.parquet", out / f"{name}_rounds.parquet")
        rounds[name] = pq.read_table(run / "rounds.parquet").select(["round", *COLUMNS]).to_pylist()
        summary = json.loads((run / "summary.json").read_text())
        result["variants"][name] = {"env": env, "seconds": round(took, 1),
                                    **{k: summary[k] for k in ("final_psnr", "final_ssim", "best_psnr",
                                                               "bicubic_psnr", "bicubic_ssim")}}
        print(f"{name}: final {summary['final_psnr']:.4f} dB ({took:.0f} s)", flush=True)
    for name in VARIANTS:
        if name == "native":
            continue
        a, b = rounds["native"], rounds[name]
        result["against_native"][name] = {
            "bit_identical": a == b,
            **{f"max_abs_delta_{c}": max(abs(x[c] - y[c]) for x, y in zip(a, b, strict=True)) for c in COLUMNS},
        }
    (out / "repro.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
