"""One builder for a run's summary.json (fedvsr.platform.results.run_summary), used by the coordinator (simulate)
and by train-central: the keys, their order and the numbers, from hand-written rows."""

from __future__ import annotations

from fedvsr.config import load_config
from fedvsr.platform.results import run_summary

BICUBIC = {"psnr": 26.0, "ssim": 0.68, "psnr_rgb": 24.5, "ssim_rgb": 0.66}
INITIAL = {"psnr": 25.5, "ssim": 0.60}
ROWS = [
    {"round": 1, "psnr": 26.5, "ssim": 0.70, "psnr_rgb": 25.0, "ssim_rgb": 0.69, "dropped": 1, "seconds": 2.5},
    {"round": 2, "psnr": 26.9, "ssim": 0.72, "psnr_rgb": 25.3, "ssim_rgb": 0.70, "dropped": 0, "seconds": 3.0},
    {"round": 3, "psnr": 26.8, "ssim": 0.73, "psnr_rgb": 25.2, "ssim_rgb": 0.71, "dropped": 2, "seconds": 4.0},
]


def test_a_federated_summary_has_its_keys_in_order():
    cfg = load_config(None, ["eval.channels=y+rgb"])
    s = run_summary(cfg, "fedavg", 1234, ROWS, BICUBIC, INITIAL, clients_dropped=3)
    assert s == {
        "model": "efvsr",
        "preset": "small",
        "params": 1234,
        "strategy": "fedavg",
        "rounds": 3,
        "final_psnr": 26.8,
        "final_ssim": 0.73,
        "best_psnr": 26.9,
        "best_round": 2,
        "bicubic_psnr": 26.0,
        "bicubic_ssim": 0.68,
        "initial_psnr": 25.5,
        "initial_ssim": 0.60,
        "final_psnr_rgb": 25.2,
        "final_ssim_rgb": 0.71,
        "bicubic_psnr_rgb": 24.5,
        "bicubic_ssim_rgb": 0.66,
        "eval_channels": "y+rgb",
        "clients_dropped": 3,
        "rounds_seconds": 9.5,
    }
    assert list(s)[-3:] == ["eval_channels", "clients_dropped", "rounds_seconds"]  # summary.json's key order


def test_a_central_summary_has_no_dropped_clients_and_no_rounds_give_the_initial_model():
    cfg = load_config(None, [])
    s = run_summary(cfg, "central", 99, ROWS[:1], {"psnr": 26.0, "ssim": 0.68}, INITIAL)
    assert "clients_dropped" not in s and "final_psnr_rgb" in s and "bicubic_psnr_rgb" not in s
    assert (s["strategy"], s["best_round"], s["rounds_seconds"], list(s)[-1]) == ("central", 1, 2.5, "rounds_seconds")
    empty = run_summary(cfg, "fedavg", 99, [], {"psnr": 26.0, "ssim": 0.68}, INITIAL, clients_dropped=0)
    assert (
        empty["rounds"],
        empty["final_psnr"],
        empty["final_ssim"],
        empty["best_psnr"],
        empty["best_round"],
        empty["rounds_seconds"],
    ) == (0, 25.5, 0.60, None, None, 0.0)
