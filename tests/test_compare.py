"""`fedvsr compare` on hand-written replicate groups, runs and sweeps: the paired differences and p-values against
scipy, Holm's correction, the verdicts, the labels and the files."""

from __future__ import annotations

import json

import pytest
from scipy import stats as st

from fedvsr.cli import main
from fedvsr.compare import run_compare
from fedvsr.config import ConfigError
from tests.folders import fake_group, fake_run, fake_sweep

# final PSNR under the training seeds 0..3 (data seed 0); each curve is [25.2, final]
REF = [25.40, 25.45, 25.41, 25.47]
BETTER = [25.61, 25.62, 25.60, 25.66]  # paired differences 0.21, 0.17, 0.19, 0.19
WORSE = [25.30, 25.36, 25.30, 25.38]  # -0.10, -0.09, -0.11, -0.09
TIE = [25.42, 25.43, 25.44, 25.45]  # 0.02, -0.02, 0.03, -0.02


def _groups(tmp_path):
    paths = []
    for name, finals, strategy in (
        ("avg", REF, "fedavg"),
        ("vsr", BETTER, "fedvsr"),
        ("prox", WORSE, "fedprox"),
        ("scaffold", TIE, "scaffold"),
    ):
        paths.append(str(fake_group(tmp_path / name, [[25.2, f] for f in finals], strategy=strategy, bicubic=25.0)))
    return paths


def test_paired_differences_p_values_and_verdicts_match_scipy(tmp_path):
    out, text = run_compare(_groups(tmp_path), tmp_path / "cmp")
    doc = json.loads((out / "compare.json").read_text())
    assert [e["label"] for e in doc["entries"]] == [
        "fl.strategy=fedavg",
        "fl.strategy=fedvsr",
        "fl.strategy=fedprox",
        "fl.strategy=scaffold",
    ]
    assert doc["entries"][0]["final_psnr"]["mean"] == pytest.approx(25.4325) and doc["entries"][0]["n"] == 4
    raw = [st.ttest_rel(other, REF) for other in (BETTER, WORSE, TIE)]
    # Holm over 3: sorted p, times 3, 2, 1, running maximum
    order = sorted(range(3), key=lambda i: raw[i].pvalue)
    holm, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * raw[i].pvalue))
        holm[i] = running
    for comp, ref, adjusted, finals in zip(doc["comparisons"], raw, holm, (BETTER, WORSE, TIE), strict=True):
        ci = ref.confidence_interval(0.95)
        assert comp["paired"] and comp["n_pairs"] == 4
        assert comp["diff"]["mean"] == pytest.approx(sum(finals) / 4 - sum(REF) / 4)
        assert (comp["diff"]["low"], comp["diff"]["high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
        assert comp["p"] == pytest.approx(ref.pvalue, rel=1e-10)
        assert comp["p_holm"] == pytest.approx(adjusted, rel=1e-10)
    assert [c["verdict"] for c in doc["comparisons"]] == ["better", "worse", "tie"]
    assert doc["comparisons"][0]["diff"]["mean"] == pytest.approx(0.19)


def test_markdown_table_and_png(tmp_path):
    out, text = run_compare(_groups(tmp_path), tmp_path / "cmp")
    md = (out / "compare.md").read_text()
    assert text.splitlines()[0] == (
        "|  | final PSNR (dB) | best PSNR (dB) | final SSIM | best SSIM | n | Δ final PSNR (dB) | p (Holm) | verdict |"
    )
    p_better = st.ttest_rel(BETTER, REF).pvalue
    half = st.t.ppf(0.975, 3) * st.tstd([0.21, 0.17, 0.19, 0.19]) / 2
    # REF: mean 25.4325, s = 0.03304, half = 3.1824 * 0.03304 / 2 = 0.05258; 3 decimals, as TIE's mean (25.435)
    # is 0.0025 from it (2 would print both as 25.43); SSIM = 0.5 + PSNR / 100: 5 decimals. BETTER: mean 25.6225,
    # s = 0.02630, half = 3.1824 * 0.02630 / 2 = 0.0419
    row = [c.strip() for c in md.splitlines()[5].split("|")[1:-1]]
    assert md.splitlines()[4] == (
        "| fl.strategy=fedavg (reference) | 25.432 ± 0.053 | 25.432 ± 0.053 | 0.75432 ± "
        "0.00053 | 0.75432 ± 0.00053 | 4 |  |  | reference |"
    )
    assert row[0] == "fl.strategy=fedvsr" and row[1] == "25.623 ± 0.042" and row[5] == "4"
    assert 3 * p_better < 0.001  # Holm: the smallest of 3 p-values times 3
    assert row[6] == f"+0.190 ± {half:.3f}" and row[7] == "< 0.001" and row[8] == "better"
    tie = [c.strip() for c in md.splitlines()[7].split("|")[1:-1]]
    p_tie = st.ttest_rel(TIE, REF).pvalue  # the largest: Holm multiplies it by 1
    assert tie[0] == "fl.strategy=scaffold" and tie[7] == f"{p_tie:.2g}" and tie[8] == "tie"
    assert "Holm-corrected over the 3 comparisons" in md
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_sweep_contributes_its_best_point_and_says_so(tmp_path):
    ref = fake_group(tmp_path / "avg", [[25.2, f] for f in REF[:3]], strategy="fedavg")
    sweep = fake_sweep(
        tmp_path / "lambdas",
        {
            "0-a": {"curves": [[25.2, f] for f in TIE[:3]], "strategy": "fedvsr", "overrides": ("fl.lambda_hifr=0.3",)},
            "1-b": {
                "curves": [[25.2, f] for f in BETTER[:3]],
                "strategy": "fedvsr",
                "overrides": ("fl.lambda_hifr=0.4",),
            },
        },
        params={"fl.lambda_hifr": {"grid": [0.3, 0.4]}},
        fixed={"fl.rounds": 2, "fl.strategy": "fedvsr"},
    )
    out, text = run_compare([str(ref), str(sweep)], tmp_path / "cmp", labels=["FedAvg", "FedVSR (best lambda)"])
    doc = json.loads((out / "compare.json").read_text())
    entry = doc["entries"][1]
    assert entry["label"] == "FedVSR (best lambda)"
    assert entry["note"] == (
        "a sweep: its best point by mean final_psnr, lambdas/1-b (n=3, the best of 2 finished points)"
    )
    assert entry["final_psnr"]["mean"] == pytest.approx(sum(BETTER[:3]) / 3)
    assert "FedVSR (best lambda): " in text and "a sweep: its best point by mean final_psnr" in text


def test_without_shared_seeds_welch_and_a_single_run_is_untested(tmp_path):
    ref = fake_group(tmp_path / "a", [[25.2, f] for f in REF], strategy="fedavg")
    other = fake_group(tmp_path / "b", [[25.2, f] for f in BETTER], seeds=[10, 11, 12, 13], strategy="fedvsr")
    single = fake_run(tmp_path / "c", [25.2, 25.5], strategy="fedprox")
    out, text = run_compare([str(ref), str(other), str(single)], tmp_path / "cmp")
    welch, untested = json.loads((out / "compare.json").read_text())["comparisons"]
    assert not welch["paired"] and welch["p"] == pytest.approx(st.ttest_ind(BETTER, REF, equal_var=False).pvalue)
    assert welch["p_holm"] == pytest.approx(welch["p"])  # the untested comparison is not counted by Holm
    assert untested["verdict"] == "untested" and untested["p"] is None
    assert "(Welch)" in text and "| untested |" in text


def test_refusals(tmp_path):
    a = str(fake_run(tmp_path / "a", [25.0], strategy="fedavg"))
    with pytest.raises(ConfigError, match="needs two or more folders"):
        run_compare([a], tmp_path / "x")
    with pytest.raises(ConfigError, match=r"--label given 1 times for 2 folders"):
        run_compare([a, a], tmp_path / "x", labels=["one"])
    fake_run(tmp_path / "set" / "r0", [25.0], lr=0.001)
    fake_run(tmp_path / "set" / "r1", [25.0], lr=0.002)
    with pytest.raises(ConfigError, match=r"holds 2 points, not one \(they differ in fl.lr\)"):
        run_compare([a, str(tmp_path / "set")], tmp_path / "x")


def test_a_folder_of_runs_under_several_seeds_is_one_entry_and_the_cli_prints_the_table(tmp_path, capsys):
    for seed, final in enumerate(REF):
        fake_run(tmp_path / "seeds" / f"s{seed}", [25.2, final], seed=seed, strategy="fedavg")
    vsr = fake_group(tmp_path / "vsr", [[25.2, f] for f in BETTER], strategy="fedvsr")
    assert main(["compare", str(tmp_path / "seeds"), str(vsr), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| fl.strategy=fedavg (reference) | 25.43 ± 0.05 |" in out and "| better |" in out  # no close means
    assert "a set of 4 runs of one config" in out
    assert (tmp_path / "cmp" / "compare.md").is_file()
