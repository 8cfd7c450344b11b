"""How far the numbers move on another CPU, why, and what ``platform.kernels = portable`` pins.

    python benchmarks/repro_cpu_paths.py [--out benchmarks/results/repro_cpu_paths] [--set key=value ...]
        [--variants machines | knobs | NAME ...] [--parts ops cost runs]

Three parts, each variant in fresh processes (torch, oneDNN, MKL and numpy read the variables below when they
load; the Ray workers inherit them from the driver, as on a machine whose CPU offers only those kernels):

1. **Ops** (``kernels.json``, ``kernels.md``): the pieces of one ``efvsr/small`` training step (convolution
   forward and backward, pixel shuffle, bicubic interpolation, the Charbonnier loss's square root, float32
   sums, an Adam step on fixed gradients, a whole step) and of the data path (the LR frames' bicubic
   downsampling, numpy's float64 ``exp``), each on fixed inputs, hashed; a variant's row says which ops give
   other bits than ``native``. This names the kernel behind a difference.
2. **Cost** (``kernel_cost.json``): process CPU seconds per efvsr/small training step with native kernels,
   portable mode's, and the stricter pinning it does not use (oneDNN off, so convolutions go through MKL's
   reproducible GEMM), in turn A B C A B C, each a fresh process. CPU seconds, not wall time, so that other
   jobs on a shared machine move the ratio little.
3. **Runs** (``repro.json``, ``repro.md``, ``<variant>_rounds.parquet``): the experiment (the default one, or
   with ``--set`` overrides) once per variant, each on videos it builds itself and its own LR cache, compared
   with ``native`` (portable runs with ``portable``): bit-identical or not (rounds, clients, final model), the
   first round that differs, the largest per-round PSNR difference, whether the videos and LR frames are
   identical; the cost of portable mode as the ratio of its seconds per round to native's, run A B A B.

Variant groups (``--variants``; default ``machines``):

- ``machines``: ``native`` (this CPU's own kernels), ``portable`` (``platform.kernels=portable``),
  ``native-again``, ``portable-again`` (A B A B: the same bits again, and the time ratio twice),
  ``avx2-cpu`` (an AVX2 CPU: ATen, oneDNN and MKL capped at AVX2, numpy without AVX-512), ``portable-avx2-cpu``
  (portable mode there: must equal ``portable``), ``sse41-cpu`` (an older CPU: ATen's default kernels, oneDNN at
  SSE4.1, MKL at SSE4.2, numpy at its baseline), ``seed-1`` (native, training seed 1: the size of a difference
  that is not the CPU's).
- ``knobs``: one library forced down at a time: ``aten-avx2``, ``aten-default``, ``onednn-avx2``, ``mkl-avx2``,
  ``mkl-cbwr``, ``numpy-avx2`` (and ``native``).

A forced-down variant only emulates another CPU when this one has the faster kernels (the numbers of
docs/reproducibility.md come from an AVX-512 machine; on an AVX2 machine ``avx2-cpu`` is ``native``).
``environment.json`` of each run records what its workers ran; ``repro.json`` keeps the fields that differ
between variants.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from fedvsr.platform.environment import KERNEL_ENV_VARS, describe, kernel_env, numpy_above_avx2

#: numpy's dispatched features above its baseline (numpy 2.4: X86_V3 = AVX2, X86_V4 and AVX512_* = AVX-512)
AVX2_CPU = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_above_avx2()),
}
PROBE_MKLDNN_OFF = "FEDVSR_PROBE_MKLDNN_OFF"  # read by the op probe only: torch.backends.mkldnn.enabled = False


def _numpy_above_baseline() -> str:
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__

    return " ".join(f for f in __cpu_dispatch__ if f not in __cpu_baseline__)


SSE41_CPU = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "NPY_DISABLE_CPU_FEATURES": _numpy_above_baseline(),
}

#: name -> (environment, config overrides, what it is)
VARIANTS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "native": ({}, [], "this CPU's own kernels"),
    "native-again": ({}, [], "the same, run again"),
    "portable": ({}, ["platform.kernels=portable"], "platform.kernels=portable"),
    "portable-again": ({}, ["platform.kernels=portable"], "the same, run again"),
    "avx2-cpu": (AVX2_CPU, [], "an AVX2 CPU: ATen, oneDNN, MKL at AVX2, numpy without AVX-512"),
    "portable-avx2-cpu": (AVX2_CPU, ["platform.kernels=portable"], "portable mode on that AVX2 CPU"),
    "sse41-cpu": (SSE41_CPU, [], "an older CPU: ATen default, oneDNN SSE4.1, MKL SSE4.2, numpy baseline"),
    "seed-1": ({}, ["seed=1"], "native, training seed 1 instead of 0 (not a CPU difference)"),
    "aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, [], "ATEN_CPU_CAPABILITY=avx2"),
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, [], "ATEN_CPU_CAPABILITY=default"),
    "onednn-avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, [], "ONEDNN_MAX_CPU_ISA=AVX2"),
    "mkl-avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, [], "MKL_ENABLE_INSTRUCTIONS=AVX2"),
    "mkl-cbwr": ({"MKL_CBWR": "COMPATIBLE"}, [], "MKL_CBWR=COMPATIBLE"),
    "numpy-avx2": (
        {"NPY_DISABLE_CPU_FEATURES": AVX2_CPU["NPY_DISABLE_CPU_FEATURES"]},
        [],
        "NPY_DISABLE_CPU_FEATURES: numpy without AVX-512",
    ),
}
GROUPS = {
    "machines": [
        "native",
        "portable",
        "native-again",
        "portable-again",
        "avx2-cpu",
        "portable-avx2-cpu",
        "sse41-cpu",
        "seed-1",
    ],
    "knobs": ["native", "aten-avx2", "aten-default", "onednn-avx2", "mkl-avx2", "mkl-cbwr", "numpy-avx2"],
}
#: op-probe variants: the knobs, the emulated CPUs, oneDNN off, and portable mode's variables on both CPUs
PROBES: dict[str, dict[str, str]] = {
    "native": {},
    "native-again": {},
    **{n: VARIANTS[n][0] for n in GROUPS["knobs"][1:]},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn-off": {PROBE_MKLDNN_OFF: "1"},
    "mkl-cbwr-avx2": {"MKL_CBWR": "AVX2,STRICT"},
    "avx2-cpu": AVX2_CPU,
    "sse41-cpu": SSE41_CPU,
    "portable": kernel_env("portable"),
    "portable-avx2-cpu": {**AVX2_CPU, **kernel_env("portable")},
}
#: what a variant is compared with (else ``native``): portable runs with portable runs
REFERENCE = {"portable-again": "portable", "portable-avx2-cpu": "portable"}
#: columns of rounds.parquet / clients.parquet that measure time or placement, not the computation
NOT_COMPUTED = {"seconds", "train_seconds", "eval_seconds", "updates_per_s", "samples_per_s", "worker", "device", "gpu"}


# ---------------------------------------------------------------------------------------------- ops


def probe_ops() -> dict[str, str]:
    """Hashes of each piece of an efvsr/small training step and of the data path, on fixed inputs."""
    import numpy as np
    import torch

    torch.set_num_threads(1)  # as a worker with platform.cpus_per_worker = 1
    if os.environ.get(PROBE_MKLDNN_OFF):
        torch.backends.mkldnn.enabled = False
    from fedvsr.data.degrade import bicubic_downsample
    from fedvsr.models import build_model, charbonnier

    def h(x) -> str:
        a = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]

    g = torch.Generator().manual_seed(1)
    lr, hr = torch.rand(8, 3, 3, 32, 32, generator=g), torch.rand(8, 3, 3, 128, 128, generator=g)
    feat = torch.rand(8, 32, 32, 32, generator=g)
    torch.manual_seed(0)
    model = build_model("efvsr", "small", {})
    torch.nn.init.normal_(model.tail.weight, std=1e-2)  # the residual path live, as after some training
    conv = model.body[0].conv1
    x = feat.clone().requires_grad_(True)
    y = conv(x)
    y.backward(torch.rand(y.shape, generator=g))
    out = {
        "conv forward (oneDNN)": h(y),
        "conv backward, weights": h(conv.weight.grad),
        "conv backward, input": h(x.grad),
    }
    conv.zero_grad()
    out["pixel shuffle"] = h(torch.nn.functional.pixel_shuffle(feat, 2))
    out["bicubic upsampling (skip path)"] = h(torch.nn.functional.interpolate(feat, scale_factor=4, mode="bicubic"))
    out["leaky relu"] = h(torch.nn.functional.leaky_relu(feat - 0.5, 0.1))
    pos = torch.rand(8 * 3 * 128 * 128, generator=g) + 1e-6
    out["sqrt, float32 (MKL VML)"] = h(torch.sqrt(pos))
    out["sum, float32"] = h(pos.sum())
    out["Charbonnier loss"] = h(charbonnier(hr[:, 1], hr[:, 1].flip(-1)))
    params = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in (32, 864, 9216, 36864)]
    adam = torch.optim.Adam(params, lr=2e-3, betas=(0.9, 0.99))
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        adam.step()
    out["Adam, 3 steps on fixed gradients"] = h(torch.cat([p.detach() for p in params]))
    step = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    loss = charbonnier(model(lr), model.target(hr))
    loss.backward()
    step.step()
    out["training step: loss"] = h(loss)
    out["training step: weights after Adam"] = h(torch.cat([p.detach().flatten() for p in model.parameters()]))
    out["LR frames: bicubic downsampling (float32 matmul)"] = h(
        bicubic_downsample(hr[:, 1].reshape(-1, 3, 128, 128), 4)
    )
    n = np.random.default_rng(0).standard_normal(4096)
    out["numpy float64 exp (loss-aware weights)"] = h(np.exp(n))
    out["numpy float64 sum"] = h(n.sum())
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), **out}


def time_steps(steps: int = 20) -> dict[str, float]:
    """Process CPU seconds (and wall seconds) per efvsr/small training step (batch 8 of 32x32 LR patches, Adam,
    1 thread): the kernels' cost, little moved by other processes on a shared machine, unlike wall time."""
    import torch

    torch.set_num_threads(1)
    if os.environ.get(PROBE_MKLDNN_OFF):
        torch.backends.mkldnn.enabled = False
    from fedvsr.models import build_model, charbonnier

    g = torch.Generator().manual_seed(1)
    lr, hr = torch.rand(8, 3, 3, 32, 32, generator=g), torch.rand(8, 3, 3, 128, 128, generator=g)
    model = build_model("efvsr", "small", {})
    adam = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))

    def step() -> None:
        adam.zero_grad()
        charbonnier(model(lr), model.target(hr)).backward()
        adam.step()

    for _ in range(2):
        step()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    return {"cpu": (time.process_time() - cpu) / steps, "wall": (time.perf_counter() - wall) / steps}


#: the kernel settings timed against native: portable mode, and the stricter pinning it does not use (oneDNN off)
TIMED = {
    "native": {},
    "portable": kernel_env("portable"),
    "portable, oneDNN off": {**kernel_env("portable"), PROBE_MKLDNN_OFF: "1"},
}


def time_kernels(out: Path, repeats: int = 5) -> dict:
    """CPU seconds per training step under :data:`TIMED`, in turn (A B C A B C ...), each a fresh process."""
    times: dict[str, list[dict[str, float]]] = {n: [] for n in TIMED}
    for _ in range(repeats):
        for name, env in TIMED.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--time-child"], env=_env(env), capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise SystemExit(f"timing {name} failed:\n{proc.stderr[-3000:]}")
            times[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = [t["cpu"] for t in times["native"]]
    result = {
        name: {
            "cpu_seconds_per_step": [round(t["cpu"], 4) for t in ts],
            "wall_seconds_per_step": [round(t["wall"], 4) for t in ts],
            "cpu_over_native": [round(t["cpu"] / b, 3) for t, b in zip(ts, base, strict=True)],
            "median_cpu_over_native": round(statistics.median(t["cpu"] / b for t, b in zip(ts, base, strict=True)), 3),
        }
        for name, ts in times.items()
    }
    (out / "kernel_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result.items():
        print(f"cost {name}: CPU s/step {r['cpu_seconds_per_step']}, over native {r['cpu_over_native']}", flush=True)
    return result


def run_probes(out: Path) -> dict:
    results = {}
    for name, env in PROBES.items():
        proc = subprocess.run(
            [sys.executable, __file__, "--probe-child"], env=_env(env), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"probe {name} failed:\n{proc.stderr[-3000:]}")
        ref = REFERENCE.get(name, "native")
        results[name] = {"env": env, "hashes": json.loads(proc.stdout.strip().splitlines()[-1]), "with": ref}
        base = results[ref]["hashes"]
        results[name]["differs"] = [
            k for k, v in results[name]["hashes"].items() if k != "torch_cpu_capability" and v != base[k]
        ]
        print(
            f"ops {name}: {results[name]['hashes']['torch_cpu_capability']}, differs from {ref}: "
            f"{', '.join(results[name]['differs']) or 'nothing'}",
            flush=True,
        )
    (out / "kernels.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "kernels.md").write_text(probe_table(results))
    return results


def probe_table(results: dict) -> str:
    ops = [k for k in results["native"]["hashes"] if k != "torch_cpu_capability"]
    names = list(results)
    head = [
        f"`{n}`" + ("" if results[n]["with"] == "native" else f" (against `{results[n]['with']}`)") for n in names[1:]
    ]
    lines = [
        "| op | " + " | ".join(head) + " |",
        "|---" * len(names) + "|",
        "| torch CPU capability | "
        + " | ".join(results[n]["hashes"]["torch_cpu_capability"] for n in names[1:])
        + " |",
    ]
    for op in ops:
        lines.append(
            f"| {op} | " + " | ".join("differs" if op in results[n]["differs"] else "=" for n in names[1:]) + " |"
        )
    legend = "\n".join(
        f"- `{n}`: {' '.join(f'{k}={v}' for k, v in r['env'].items()) or 'nothing set'}" for n, r in results.items()
    )
    return (
        "Which pieces of an efvsr/small training step give other bits than `native` (or the variant named in the "
        "header) on this machine (`=`: the same bits).\n\n" + "\n".join(lines) + "\n\n" + legend + "\n"
    )


# ---------------------------------------------------------------------------------------------- runs


def _env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any kernel-pinning variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV_VARS}
    return {**env, **extra}


def run_variant(name: str, work: Path, overrides: list[str]) -> dict:
    env, sets, what = VARIANTS[name]
    run = work / name / "run"
    cmd = [
        sys.executable,
        "-m",
        "fedvsr.cli",
        "simulate",
        "--out",
        str(run),
        *(
            f"--set={s}"
            for s in [f"data.root={work / name / 'data'}", f"data.lr_cache={work / name / 'lr'}", *overrides, *sets]
        ),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(env), capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run / "summary.json").read_text())
    rounds = pq.read_table(run / "rounds.parquet")
    environment = json.loads((run / "environment.json").read_text())
    per_round = rounds.column("seconds").to_pylist()
    print(f"{name}: final {summary['final_psnr']:.4f} dB, {took:.0f} s", flush=True)
    return {
        "what": what,
        "env": env,
        "set": sets,
        "seconds": round(took, 1),
        "median_round_seconds": round(statistics.median(per_round), 3),
        **{k: summary[k] for k in ("final_psnr", "final_ssim", "best_psnr", "bicubic_psnr", "bicubic_ssim")},
        "environment": {
            k: v
            for k, v in environment.items()
            if k.startswith(("worker.torch_cpu", "worker.env", "worker.numpy_simd", "kernels"))
        },
    }


def _rows(run: Path, name: str) -> list[dict]:
    table = pq.read_table(run / name)
    return table.drop_columns([c for c in table.column_names if c in NOT_COMPUTED]).to_pylist()


def _digest(paths: list[Path]) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)


def compare(a: Path, b: Path) -> dict:
    """How run folder ``b`` differs from ``a`` (both of one config): bits, first round, PSNR, data."""
    ra, rb = _rows(a / "run", "rounds.parquet"), _rows(b / "run", "rounds.parquet")
    ca, cb = _rows(a / "run", "clients.parquet"), _rows(b / "run", "clients.parquet")
    model = [hashlib.sha256((x / "run" / "model.safetensors").read_bytes()).hexdigest() for x in (a, b)]
    first, columns = None, []
    for r in sorted({row["round"] for row in ra}):
        columns = [
            f"{table}.{k}"
            for table, (x, y) in (("rounds", (ra, rb)), ("clients", (ca, cb)))
            for k in x[0]
            if [row[k] for row in x if row["round"] == r] != [row[k] for row in y if row["round"] == r]
        ]
        if columns:
            first = r
            break
    diff = [x["psnr"] - y["psnr"] for x, y in zip(ra, rb, strict=True)]
    videos = [_digest(sorted((x / "data").rglob("*.mkv"))) for x in (a, b)]
    lr = [_digest(sorted((x / "lr").rglob("*.npy"))) for x in (a, b)]
    return {
        "bit_identical": ra == rb and ca == cb and model[0] == model[1],
        "first_differing_round": first,
        "first_differing_columns": columns,
        "round_1_psnr": [ra[0]["psnr"], rb[0]["psnr"]],
        "max_abs_delta_psnr": max(abs(d) for d in diff),
        "final_delta_psnr": rb[-1]["psnr"] - ra[-1]["psnr"],
        "max_abs_delta_train_loss": max(abs(x["train_loss"] - y["train_loss"]) for x, y in zip(ra, rb, strict=True)),
        "videos_identical": videos[0] == videos[1],
        "lr_frames_identical": lr[0] == lr[1],
    }


def cost(variants: dict) -> dict:
    """Portable mode's seconds per round over native's, pair by pair (A B A B)."""
    pairs = [
        (a, b)
        for a, b in (("native", "portable"), ("native-again", "portable-again"))
        if a in variants and b in variants
    ]
    ratios = [variants[b]["median_round_seconds"] / variants[a]["median_round_seconds"] for a, b in pairs]
    return {
        "pairs": pairs,
        "portable_over_native_round_seconds": [round(r, 3) for r in ratios],
        "mean": round(sum(ratios) / len(ratios), 3) if ratios else None,
    }


def _first(c: dict) -> str:
    if c["first_differing_round"] is None:
        return "-"
    return f"{c['first_differing_round']} ({', '.join(c['first_differing_columns'])})"


def _data(c: dict) -> str:
    if c["videos_identical"] and c["lr_frames_identical"]:
        return "identical"
    same = {True: "same", False: "differ"}
    return f"videos {same[c['videos_identical']]}, LR {same[c['lr_frames_identical']]}"


def run_table(result: dict, out: Path) -> str:
    lines = [
        "| variant | what | final PSNR / SSIM | best PSNR | s/round | compared with | bits | first round that "
        "differs (in) | largest per-round ΔPSNR | final ΔPSNR | videos, LR frames |",
        "|---" * 11 + "|",
    ]
    for name, v in result["variants"].items():
        c = result["compared"].get(name)
        against = (
            ("-",) * 6
            if c is None
            else (
                f"`{c['with']}`",
                "identical" if c["bit_identical"] else "differ",
                _first(c),
                f"{c['max_abs_delta_psnr']:.4f} dB",
                f"{c['final_delta_psnr']:+.4f} dB",
                _data(c),
            )
        )
        lines.append(
            f"| `{name}` | {v['what']} | {v['final_psnr']:.4f} / {v['final_ssim']:.5f} | {v['best_psnr']:.4f} "
            f"| {v['median_round_seconds']:.1f} | " + " | ".join(against) + " |"
        )
    c = result["cost"]
    foot = (
        f"\nPortable mode's median seconds per round over native's, A B A B: "
        f"{', '.join(f'{r:.2f}' for r in c['portable_over_native_round_seconds'])} (mean {c['mean']}).\n"
        if c["mean"] is not None
        else ""
    )
    if (out / "kernel_cost.json").is_file():
        k = json.loads((out / "kernel_cost.json").read_text())
        foot += (
            "CPU seconds per efvsr/small training step over native's (`kernel_cost.json`, median of "
            f"{len(k['native']['cpu_over_native'])} turns): "
            + ", ".join(f"{n} {r['median_cpu_over_native']:.2f}" for n, r in k.items() if n != "native")
            + ".\n"
        )
    return (
        f"Measured {result['date']} at commit {result['commit']} on {result['machine']['cpu_model']} "
        f"({result['machine']['torch_cpu_capability']}; overrides: {' '.join(result['overrides']) or 'none'}).\n\n"
        + "\n".join(lines)
        + "\n"
        + foot
    )


PARTS = ("ops", "cost", "runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "repro_cpu_paths"))
    parser.add_argument("--set", action="append", default=[], help="config overrides for every variant")
    parser.add_argument("--variants", nargs="+", default=["machines"], help="groups or names (see the docstring)")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=list(PARTS),
        choices=PARTS,
        help="ops: the op probe; cost: the kernel timing; runs: the experiment per variant",
    )
    parser.add_argument("--probe-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--time-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_child or args.time_child:
        print(json.dumps(probe_ops() if args.probe_child else time_steps()))
        return
    names = list(dict.fromkeys(n for v in args.variants for n in GROUPS.get(v, [v])))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; allowed: {', '.join([*GROUPS, *VARIANTS])}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "ops" in args.parts:
        run_probes(out)
    if "cost" in args.parts:
        time_kernels(out)
    if "runs" in args.parts:
        run_all(out, ["native", *(n for n in names if n != "native")], args.set)
    elif (out / "repro.json").is_file():  # the table again, with the kernel cost measured now
        (out / "repro.md").write_text(run_table(json.loads((out / "repro.json").read_text()), out))


def run_all(out: Path, names: list[str], overrides: list[str]) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    result: dict = {
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "overrides": overrides,
        "machine": describe(),
        "variants": {},
        "compared": {},
    }
    work = Path(tempfile.mkdtemp(prefix="fedvsr-repro-"))
    try:
        for name in names:
            result["variants"][name] = run_variant(name, work, overrides)
            shutil.copy(work / name / "run" / "rounds.parquet", out / f"{name}_rounds.parquet")
            ref = REFERENCE.get(name, "native")
            if name != "native" and ref in result["variants"]:
                result["compared"][name] = {"with": ref, **compare(work / ref, work / name)}
        result["cost"] = cost(result["variants"])
        (out / "repro.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "repro.md").write_text(run_table(result, out))
        print(run_table(result, out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
