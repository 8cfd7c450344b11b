"""FCVSR's Decoupler (eq. 8) with the full FFT against the real FFT it now uses: one training step
(forward + backward) of the whole model, the two variants alternated A B A B in one process so that
both see the same machine load; reports the median step times and their ratio.

    python benchmarks/fcvsr_rfft.py [--preset small] [--batch 8] [--patch 32] [--pairs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fedvsr.models import build_model
from fedvsr.models.fcvsr_blocks import Decoupler


def full_fft_forward(self: Decoupler, x: torch.Tensor) -> torch.Tensor:
    """The earlier implementation: the full, centred spectrum of eq. (8)."""
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    bands = spec.unsqueeze(1) * self.masks(h, w, x.device, x.dtype)[None, :, None]
    return torch.fft.ifft2(torch.fft.ifftshift(bands, dim=(-2, -1)), norm="ortho").real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fcvsr_rfft"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("fcvsr", args.preset)
    lr = torch.rand(args.batch, model.num_frames, 3, args.patch, args.patch)
    hr = torch.rand(args.batch, model.num_frames, 3, args.patch * 4, args.patch * 4)
    real_fft = Decoupler.forward

    def step() -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        sr = model(lr)
        model.vsr_loss(sr, hr, lr).backward()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"full fft2": [], "rfft2": []}
    for _, forward in (("full fft2", full_fft_forward), ("rfft2", real_fft)):  # warm-up
        Decoupler.forward = forward
        step()
    for _ in range(args.pairs):
        for variant, forward in (("full fft2", full_fft_forward), ("rfft2", real_fft)):
            Decoupler.forward = forward
            times[variant].append(step())
    # the decoupler alone, forward + backward, on a feature of the shape it sees in this step
    shapes: list[tuple[int, ...]] = []
    hook = model.mffr.decoupler.register_forward_hook(lambda m, a, o: shapes.append(tuple(a[0].shape)))
    with torch.no_grad():
        model(lr[:1])
    hook.remove()
    feat = torch.randn(args.batch * shapes[0][0], *shapes[0][1:], requires_grad=True)
    op: dict[str, list[float]] = {"full fft2": [], "rfft2": []}
    for _ in range(args.pairs):
        for variant, forward in (("full fft2", full_fft_forward), ("rfft2", real_fft)):
            Decoupler.forward = forward
            start = time.perf_counter()
            model.mffr.decoupler(feat).square().sum().backward()
            op[variant].append(time.perf_counter() - start)
    Decoupler.forward = real_fft
    med = {k: statistics.median(v) for k, v in times.items()}
    op_med = {k: statistics.median(v) for k, v in op.items()}
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "patch": args.patch,
        "threads": args.threads,
        "pairs": args.pairs,
        "median_step_seconds": med,
        "ratio_rfft2_over_fft2": med["rfft2"] / med["full fft2"],
        "step_seconds": times,
        "decoupler_input_shape": [args.batch * shapes[0][0], *shapes[0][1:]],
        "decoupler_median_seconds": op_med,
        "decoupler_ratio_rfft2_over_fft2": op_med["rfft2"] / op_med["full fft2"],
        "decoupler_seconds": op,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.preset}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"fcvsr/{args.preset}, batch {args.batch}, {args.patch}x{args.patch}: full fft2 {med['full fft2']:.3f} s, "
        f"rfft2 {med['rfft2']:.3f} s per step, ratio {result['ratio_rfft2_over_fft2']:.3f}; the decoupler alone "
        f"on {tuple(result['decoupler_input_shape'])}: ratio {result['decoupler_ratio_rfft2_over_fft2']:.3f}"
    )


if __name__ == "__main__":
    main()
