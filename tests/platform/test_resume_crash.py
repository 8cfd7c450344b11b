"""Crash-consistent resume: a run killed at any write point of a round resumes to the uninterrupted run's bits.

The checkpoint's own rules (a round folder appears whole, a resume takes the newest folder that matches its
manifest, else the one before) are checked on files here without Ray. Then, on Ray, a SCAFFOLD run (so the
client-state store is written every round) is killed at every write point of a round in turn by
``FEDVSR_FAULT=crash-at:POINT:ROUND``, which SIGKILLs the coordinator there, as the death of its driver would
(each kill in the resume of the one before: a coordinator start costs far more than a round), and resumed to the
end: ``rounds.parquet`` and ``clients.parquet`` (every column but wall-clock times and which worker trained a
client), ``model.safetensors`` and every client's latest control variate equal an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.platform.checkpoint import (
    MANIFEST,
    TENSORS,
    checkpoint_rounds,
    latest_checkpoint,
    latest_weights,
    prune_checkpoints,
    round_folder,
    save_checkpoint,
)
from fedvsr.platform.coordinator import WRITE_POINTS
from fedvsr.platform.results import ResultsStore, repair_jsonl
from fedvsr.platform.state_store import ClientStateStore
from tests.conftest import run_tiny

SCAFFOLD = ("fl.strategy=scaffold", "fl.optimizer=sgd", "fl.lr=0.05")
#: wall-clock columns, and which worker trained a client (scheduling): not numbers a resume must reproduce
UNTIMED = {"seconds", "train_seconds", "eval_seconds", "updates_per_s", "samples_per_s", "worker", "node"}


def params(v: float) -> dict[str, np.ndarray]:
    return {"w": np.full(3, v, np.float32)}


def save(d, t, **kw):
    return save_checkpoint(d, t, params(t), {"c.w": params(-t)["w"]}, {"bicubic": {"psnr": 1.0}}, **kw)


# ----------------------------------------------------------------------------- the checkpoint folder, no Ray


def test_the_two_newest_round_folders_are_kept_and_the_newest_is_loaded(tmp_path):
    oldest = []
    for t in (1, 2, 3):
        save(tmp_path, t)
        oldest.append(prune_checkpoints(tmp_path))
    assert oldest == [1, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-00002", "round-00003"]
    ckpt = latest_checkpoint(tmp_path)
    assert (ckpt.round, ckpt.params["w"].tolist(), ckpt.server_state["c.w"].tolist()) == (3, [3, 3, 3], [-3, -3, -3])
    assert ckpt.extra == {"bicubic": {"psnr": 1.0}} and not ckpt.legacy
    manifest = json.loads((tmp_path / "round-00003" / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["global.safetensors", "server_state.safetensors", "state.json"]
    assert latest_weights(tmp_path) == tmp_path / "round-00003" / "global.safetensors"


def test_a_folder_that_does_not_match_its_manifest_is_passed_over(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2)
    weights = tmp_path / "round-00002" / "global.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight flipped
    weights.write_bytes(bytes(data))
    passed: list[tuple[str, str]] = []
    ckpt = latest_checkpoint(tmp_path, passed)
    assert ckpt.round == 1 and ckpt.params["w"].tolist() == [1, 1, 1]
    assert passed == [(str(tmp_path / "round-00002"), "global.safetensors does not match its sha256 in manifest.json")]
    (tmp_path / "round-00001" / MANIFEST).unlink()
    passed.clear()
    assert latest_checkpoint(tmp_path, passed) is None
    assert passed[1] == (str(tmp_path / "round-00001"), "no manifest.json (the round's checkpoint was not finished)")


def test_a_folder_cut_short_before_its_rename_is_never_loaded_and_is_removed(tmp_path):
    save(tmp_path, 1)

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2, before_publish=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".round-00002.partial", "round-00001"]
    assert latest_checkpoint(tmp_path).round == 1
    save(tmp_path, 2)  # the round done again replaces what the crash left
    assert prune_checkpoints(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-00001", "round-00002"]


def test_the_result_tables_saved_with_a_checkpoint_are_what_a_resume_restores(tmp_path):
    store = ResultsStore(tmp_path)
    for t in (1, 2):
        store.append({"round": t, "psnr": 20.0 + t}, [{"round": t, "client": c} for c in (0, 1)])
        save(tmp_path / "checkpoint", t, files=store.paths())
    store.append({"round": 3, "psnr": 23.0}, [{"round": 3, "client": 0}])  # written, then a crash: no checkpoint
    ckpt = latest_checkpoint(tmp_path / "checkpoint")
    assert ckpt.round == 2
    restored = ResultsStore(tmp_path, keep_until_round=ckpt.round, restore_from=ckpt.folder)
    assert [r["round"] for r in restored.rounds] == [1, 2] and len(restored.clients) == 4
    # the run's own tables agree with the checkpoint at once, and the checkpoint's copy kept round 2's content
    assert pq.read_table(tmp_path / "rounds.parquet").to_pydict() == {"round": [1, 2], "psnr": [21.0, 22.0]}
    assert pq.read_table(ckpt.folder / "clients.parquet").num_rows == 4


def test_client_state_versions_a_kept_checkpoint_needs_survive_pruning(tmp_path):
    store = ClientStateStore(tmp_path)
    # client 0 trains in rounds 1, 3, 4; client 1 in round 2 only
    for t, clients in ((1, [0]), (2, [1]), (3, [0]), (4, [0])):
        store.commit(t, {c: params(10 * t + c) for c in clients})
    # checkpoints 3 and 4 kept: client 0 needs r3 (resume from 3) and r4, client 1 its only version r2
    assert store.prune(oldest=3) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "client_00000.r00003.safetensors",
        "client_00000.r00004.safetensors",
        "client_00001.r00002.safetensors",
    ]
    assert store.rollback(3) == 1  # round 4 was not checkpointed
    assert store.get_many([0, 1, 2])[0]["w"].tolist() == [30, 30, 30]
    assert store.get_many([1])[1]["w"].tolist() == [21, 21, 21]
    assert store.get_many([2])[2] is None


def test_a_torn_last_event_line_is_cut(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "a"}\n{"kind": "b"}\n{"kin')
    assert repair_jsonl(path) == 5
    assert path.read_text() == '{"kind": "a"}\n{"kind": "b"}\n'
    assert repair_jsonl(path) == 0


def test_an_older_run_folder_layout_loads_and_is_removed_once_two_round_folders_exist(tmp_path):
    from fedvsr.platform.checkpoint import save_arrays

    save_arrays(tmp_path / TENSORS[0], params(5))
    save_arrays(tmp_path / TENSORS[1], {"c.w": params(-5)["w"]})
    (tmp_path / "state.json").write_text(json.dumps({"round": 5, "bicubic": {}, "initial": {}}))
    ckpt = latest_checkpoint(tmp_path)
    assert (ckpt.round, ckpt.legacy, ckpt.folder) == (5, True, tmp_path)
    assert latest_weights(tmp_path) == tmp_path / TENSORS[0]
    save(tmp_path, 6)
    assert prune_checkpoints(tmp_path) == 5  # still the fallback
    save(tmp_path, 7)
    assert prune_checkpoints(tmp_path) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-00006", "round-00007"]


def test_an_unfinished_run_is_read_from_its_newest_checkpoint(tmp_path):
    import torch

    from fedvsr.config import load_config
    from fedvsr.fl.strategy import float_state
    from fedvsr.inference import load_model
    from fedvsr.models import build_model

    cfg = load_config(None, ["model.preset=tiny"])
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    model = build_model(cfg.model.name, "tiny", cfg.model.options)
    for t in (1, 2):
        weights = {k: v.numpy() + t for k, v in float_state(model).items()}
        save_checkpoint(tmp_path / "checkpoint", t, weights, {}, {})
    loaded = load_model(tmp_path)  # no model.safetensors yet
    assert loaded.weights == tmp_path / "checkpoint" / "round-00002" / "global.safetensors"
    name, value = next(iter(float_state(model).items()))
    assert torch.equal(float_state(loaded.model)[name], value + 2)
    assert load_model(loaded.weights).config is not None  # the run's config.yaml, three folders up


# ----------------------------------------------------------------------------- a run killed at each write point


def fingerprint(out) -> dict:
    """What a resume must reproduce exactly (module docstring)."""
    tables = {
        name: {k: v for k, v in pq.read_table(out / f"{name}.parquet").to_pydict().items() if k not in UNTIMED}
        for name in ("rounds", "clients")
    }
    states = {}
    for f in sorted((out / "client_state").iterdir()):
        client = f.name.split(".")[0]
        states[client] = f.read_bytes()  # the newest version of each client wins (sorted by round)
    return {**tables, "model": (out / "model.safetensors").read_bytes(), "client_state": states}


#: three rounds (so that a checkpoint and client-state versions are pruned) and one worker (the fewest processes
#: to start per run; the numbers do not depend on the number of workers)
TINY = (*SCAFFOLD, "fl.rounds=3", "platform.workers=1")

#: every write point once, each kill in the resume of the one before; a kill after a round's checkpoint is published
#: ('checkpoint', 'pruned') ends that round for good, so the chain moves to the next round there. After clients:2
#: the run folder is turned into the older layout (round 1's checkpoint as checkpoint/state.json and its two tensor
#: files), so the next resume redoes round 2 from that layout, which is kept as the fallback until round 3's
#: checkpoint removes it.
CHAIN = [
    ("client_state", 1),
    ("checkpoint_files", 1),
    ("checkpoint", 1),
    ("clients", 2),
    "older layout",
    ("rounds", 3),
    ("pruned", 3),
    ("model", 3),
    ("summary", 3),
]


@pytest.fixture(scope="module")
def reference(ray_local, synth_root, tmp_path_factory):
    out, _ = run_tiny(tmp_path_factory.mktemp("reference"), "run", synth_root, *TINY)
    return fingerprint(out)


def kill_at(tmp_path, synth_root, monkeypatch, point: str, round: int, resume: bool) -> None:
    """Start (or resume) the run in ``tmp_path / "run"`` with ``FEDVSR_FAULT=crash-at:POINT:ROUND``, which SIGKILLs
    its coordinator there, and check what it left: the checkpoint of round ``round`` exactly when the kill came
    after its folder was renamed into place, else the previous round's (or none)."""
    from ray.exceptions import RayActorError

    from fedvsr.platform.run import run_experiment

    out = tmp_path / "run"
    monkeypatch.setenv("FEDVSR_FAULT", f"crash-at:{point}:{round}")
    with pytest.raises(RayActorError):  # the run did not finish: the fault fired
        if resume:
            run_experiment(None, out, resume=True)
        else:
            run_tiny(tmp_path, "run", synth_root, *TINY)
    monkeypatch.delenv("FEDVSR_FAULT")
    published = WRITE_POINTS.index(point) >= WRITE_POINTS.index("checkpoint")
    ckpt = latest_checkpoint(out / "checkpoint")
    assert (ckpt.round if ckpt else 0) == (round if published else round - 1), (point, round)
    if point == "checkpoint_files":  # the round's folder was complete but never renamed into place
        assert (out / "checkpoint" / f".round-{round:05d}.partial" / MANIFEST).is_file()
        assert not round_folder(out / "checkpoint", round).exists()


def to_older_layout(ckpt_dir) -> None:
    """``checkpoint/`` as the code before round folders wrote it, from the newest round folder."""
    [(_, newest), *_] = checkpoint_rounds(ckpt_dir)
    for name in (*TENSORS, "state.json"):
        shutil.move(newest / name, ckpt_dir / name)
    for p in ckpt_dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
    assert latest_checkpoint(ckpt_dir).legacy


@pytest.mark.slow
def test_a_run_killed_at_every_write_point_in_turn_resumes_to_the_same_bits(
    reference, synth_root, tmp_path, monkeypatch
):
    from fedvsr.platform.run import run_experiment

    ckpt_dir = tmp_path / "run" / "checkpoint"
    for i, step in enumerate(CHAIN):
        if step == "older layout":
            to_older_layout(ckpt_dir)
            continue
        kill_at(tmp_path, synth_root, monkeypatch, *step, resume=i > 0)
        if step == ("rounds", 3):  # round 2 done again from the older layout's round 1, which stays the fallback
            assert sorted(p.name for p in ckpt_dir.iterdir()) == [TENSORS[0], "round-00002", TENSORS[1], "state.json"]
        if step == ("pruned", 3):  # two round folders: the older layout's files are gone
            assert sorted(p.name for p in ckpt_dir.iterdir()) == ["round-00002", "round-00003"]
    run_experiment(None, tmp_path / "run", resume=True)
    assert fingerprint(tmp_path / "run") == reference
    # its TensorBoard events, rewritten from the tables at each resume, show each round once, as the tables hold it
    from tests.test_tracking import assert_events_are_the_tables, table

    out = tmp_path / "run"
    assert_events_are_the_tables(out, table(out / "rounds.parquet"), table(out / "clients.parquet"))
