"""A run folder a team can share: the files fedvsr writes (atomically, through a temp file) get the mode a plain
``open(path, "w")`` gives, 0666 less the process umask, not the owner-only 0600 of ``tempfile.mkstemp``; with the
umask 002 of a shared /mnt/fedvsr (docs/cluster.md) colleagues in the group read and write them."""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pytest

from fedvsr.platform.results import process_umask, write_json_atomic, write_parquet_atomic, write_text_atomic


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_result_files_follow_the_process_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert process_umask() == umask
        write_json_atomic(tmp_path / "summary.json", {"psnr": 30.0})
        write_parquet_atomic(tmp_path / "rounds.parquet", pa.table({"round": [1]}))
        write_text_atomic(tmp_path / "config.yaml", "seed: 0\n")
        (tmp_path / "sub").mkdir()
    finally:
        os.umask(old)
    for name in ("summary.json", "rounds.parquet", "config.yaml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "rounds.parquet", "sub", "summary.json"]


def test_a_restarted_trial_names_its_nodes_in_its_row(tmp_path):
    """node.json's ``starts`` (one entry a start of the trial, written by the sweep runner) becomes trials.parquet's
    ``restarts`` and ``node_ids``; a node.json of before (no ``starts``) reads as one start."""
    import json

    from fedvsr.sweeps.results import run_row

    run = tmp_path / "00000-abc"
    run.mkdir()
    (run / "config.yaml").write_text("fl: {rounds: 2}\n")
    starts = [{"node_ip": "127.0.0.2", "node_id": "aa"}, {"node_ip": "192.0.2.2", "node_id": "bb"}]
    (run / "node.json").write_text(json.dumps({"node_ip": "192.0.2.2", "node_id": "bb", "starts": starts}))
    row = run_row(run)
    assert (row["node_id"], row["restarts"], row["node_ids"]) == ("bb", 1, "aa,bb")
    (run / "node.json").write_text(json.dumps({"node_ip": "10.0.0.7", "node_id": "n7"}))
    row = run_row(run)
    assert (row["node_id"], row["restarts"], row["node_ids"]) == ("n7", 0, "n7")
    (run / "node.json").unlink()
    row = run_row(run)
    assert (row["node_id"], row["restarts"], row["node_ids"]) == (None, 0, "")
