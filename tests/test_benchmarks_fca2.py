"""The FCA2 benchmarks' bookkeeping: the round trip's replicate statistics and the inference variants."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(s: int, o: int, seed: int, psnr: float) -> dict:
    return {"group_size": s, "overlap": o, "seed": seed, "psnr": psnr, "K": 4, "roundtrip_ms": 100.0}


def test_roundtrip_summary_by_hand():
    rt = load("fca2_roundtrip")
    runs = [run(6, 0, k, v) for k, v in enumerate((24.0, 24.2, 24.4))]
    runs += [run(6, 2, k, v) for k, v in enumerate((24.1, 24.4, 24.4))]
    settings, comparisons = rt.summarise(runs)
    t2 = 4.302652729911275  # t(0.975, df = 2)
    first = settings[0]
    assert (first["group_size"], first["overlap"], first["n"]) == (6, 0, 3)
    assert first["mean"] == pytest.approx(24.2) and first["std"] == pytest.approx(0.2)
    assert first["high"] - first["mean"] == pytest.approx(t2 * 0.2 / math.sqrt(3))
    assert first["paper_psnr"] == 46.15
    # paired differences (6, 0) - (6, 2) per seed: -0.1, -0.2, 0.0: mean -0.1, std 0.1, t = -sqrt(3);
    # Student t with 2 df: P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2)), so p = 1 - sqrt(3) / sqrt(5)
    (c,) = comparisons
    assert (c["a"], c["b"], c["n"]) == ([6, 0], [6, 2], 3)
    assert c["diff"] == pytest.approx(-0.1)
    assert c["high"] - c["diff"] == pytest.approx(t2 * 0.1 / math.sqrt(3))
    assert c["p"] == pytest.approx(1 - math.sqrt(3 / 5), rel=1e-9)
    assert c["p_holm"] == pytest.approx(c["p"]) and c["distinguishable"] is False
    text = rt.report(
        {
            "settings": settings,
            "comparisons": comparisons,
            "runs": runs,
            "seeds": [0, 1, 2],
            "steps": 5,
            "patch": 32,
            "batch": 2,
            "options": {"features": 16},
            "group_fit": "pad",
        }
    )
    assert "| 6 | 0 | 4 | 24.20 +- 0.50 (3) | 24.00, 24.20, 24.40 | 100 | 46.15 | 44 |" in text
    assert "| (6, 0) | (6, 2) | -0.100 | [-0.348, +0.148] | 0.225 | 0.225 | no |" in text


def test_roundtrip_holm_over_all_pairs():
    rt = load("fca2_roundtrip")
    # three settings, constant per-seed gaps of 1 dB: every paired difference is certain (p = 0)
    runs = [
        run(s, o, k, base + 0.1 * k)
        for (s, o), base in (((6, 0), 25.0), ((9, 3), 24.0), ((18, 8), 23.0))
        for k in range(3)
    ]
    _, comparisons = rt.summarise(runs)
    assert [(tuple(c["a"]), tuple(c["b"])) for c in comparisons] == [
        ((6, 0), (9, 3)),
        ((6, 0), (18, 8)),
        ((9, 3), (18, 8)),
    ]
    assert [c["diff"] for c in comparisons] == pytest.approx([1.0, 2.0, 1.0])
    assert all(c["p_holm"] == 0.0 and c["distinguishable"] for c in comparisons)


def test_inference_variants():
    inf = load("fca2_inference")
    specs = inf.variants(["paper", "paper-light"], [1])
    assert [(label, preset) for label, _, preset, _ in specs] == [
        ("basicvsr", "paper"),
        ("fca2/paper", "paper"),
        ("fca2/paper-light", "paper-light"),
        ("fca2/paper (clean_passes=1)", "paper"),
    ]
    assert specs[-1][3] == {"mode": "joint", "clean_passes": 1}


def test_inference_stage_shares_by_hand():
    inf = load("fca2_inference")
    runs = [{"cleaning": 1.0, "backbone": 2.0}, {"cleaning": 3.0, "backbone": 3.0}, {"cleaning": 1.0, "backbone": 1.0}]
    # shares per run: cleaning 0.25, 0.3, 0.5; backbone 0.5, 0.3, 0.5; other 0.25, 0.4, 0.0
    got = inf.stage_shares(runs, [4.0, 10.0, 2.0])
    assert got == {"cleaning": 0.3, "backbone": 0.5, "other": 0.25}
    assert inf.stage_shares([{}], [1.0]) == {}
