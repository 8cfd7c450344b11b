"""The cluster-launcher configs (cluster.yaml for AWS, cluster/gcp.yaml, cluster/onprem.yaml) pass Ray's own
validation, as `ray up` runs it (``prepare_config`` merges the provider's defaults, then ``validate_config`` checks
the schema), and after that merge: no dashboard on 0.0.0.0, token authentication on every `ray start`, the token
copied from outside the repository, a head that takes no trials, GPU workers that autoscale, and the Ray and torch
versions this package is tested with."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import ray
import torch
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["cluster.yaml", "cluster/gcp.yaml", "cluster/onprem.yaml"]


def prepared(name: str) -> dict:
    config = prepare_config(copy.deepcopy(yaml.safe_load((REPO / name).read_text())))
    validate_config(config)  # raises jsonschema.ValidationError or ValueError on a bad config
    return config


def start_commands(config: dict) -> list[str]:
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_rays_validation_and_binds_no_public_dashboard(name):
    config = prepared(name)
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and "--head" in head[0]
    assert "--dashboard-host=127.0.0.1" in head[0]
    assert "0.0.0.0" not in json.dumps(config)  # nowhere, after the provider's defaults are merged in
    assert len(start_commands(config)) == 2
    assert all("RAY_AUTH_MODE=token ray start" in c for c in start_commands(config))


def test_without_its_start_commands_the_aws_defaults_would_bind_the_dashboard_publicly():
    """What the override in cluster.yaml is for (the provider defaults that prepare_config merges in)."""
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    del raw["head_start_ray_commands"]
    config = prepare_config(raw)
    assert any("--dashboard-host=0.0.0.0" in c for c in config["head_start_ray_commands"])


@pytest.mark.parametrize("name", CONFIGS)
def test_the_token_comes_from_outside_the_repository(name):
    config = prepared(name)
    local = config["file_mounts"]["~/.ray/auth_token"]
    path = Path(os.path.expanduser(local)).resolve()
    assert path.is_absolute() and not path.is_relative_to(REPO)
    assert not list(REPO.glob("**/*auth_token*")) and not list(REPO.glob("**/ray-token*"))
    assert any("chmod 600 ~/.ray/auth_token" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", CONFIGS)
def test_nodes_share_a_file_system_and_install_the_tested_versions(name):
    config = prepared(name)
    setup = " ".join(config["setup_commands"])
    assert "mount -t nfs" in setup and "/mnt/fedvsr" in setup
    assert f'"ray[default]=={ray.__version__}"' in setup  # the same Ray as the machine that submits
    torch_version = torch.__version__.split("+")[0]
    assert f"torch=={torch_version} --index-url https://download.pytorch.org/whl/cpu" in " ".join(
        config["head_setup_commands"]
    )
    assert f"torch=={torch_version} --index-url https://download.pytorch.org/whl/cu" in " ".join(
        config["worker_setup_commands"]
    )
    assert config["file_mounts"]["~/fedvsr"] == "."
    assert all("pip install -q -e ~/fedvsr" in config[k] for k in ("head_setup_commands", "worker_setup_commands"))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster/gcp.yaml"])
def test_cloud_head_takes_no_trials_and_gpu_workers_autoscale(name):
    config = prepared(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert head["max_workers"] == 0
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 1
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= config["max_workers"]


def test_onprem_head_offers_no_cpus_or_gpus_itself():
    """The local provider sets no resources from the file: the head's own `ray start` says so."""
    config = prepared("cluster/onprem.yaml")
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c][0]
    assert "--num-cpus=0" in head and "--num-gpus=0" in head
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]


@pytest.mark.parametrize(
    "same_machine, expected",
    [
        ("no", "stop\nray start --address=10.0.0.1:6379 --disable-usage-stats\n"),
        (
            "yes",
            "ray start --address=10.0.0.1:6379 --disable-usage-stats --node-ip-address=127.0.0.3 --num-cpus=1 "
            "--dashboard-agent-listen-port=52468 --temp-dir=/tmp/x/ray-127.0.0.3\n",
        ),
    ],
)
def test_onprem_worker_start_as_shipped_and_with_same_machine(same_machine, expected):
    """cluster/onprem.yaml's worker start command, run by bash as Ray's updater runs it (`ray` replaced by echo): as
    shipped it stops an earlier Ray first; with SAME_MACHINE=yes (cluster/loopback.sh) it does not, and takes the
    node's address from the SSH connection."""
    import subprocess

    config = yaml.safe_load((REPO / "cluster/onprem.yaml").read_text())
    (command,) = config["worker_start_ray_commands"]
    assert command.startswith("SAME_MACHINE=no;")
    command = command.replace("SAME_MACHINE=no;", f"SAME_MACHINE={same_machine};")
    command = command.replace("ray stop", "echo stop").replace("RAY_AUTH_MODE=token ray start", "echo ray start")
    env = {
        "PATH": os.environ["PATH"],
        "RAY_HEAD_IP": "10.0.0.1",
        "TMPDIR": "/tmp/x",
        "SSH_CONNECTION": "127.0.0.1 40000 127.0.0.3 22",
    }
    assert subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True).stdout == expected
    shared = [c for c in config["setup_commands"] if "NFS=" in c]
    assert len(shared) == 1 and shared[0].startswith(
        "NFS=REPLACE-WITH-NFS-SERVER:/REPLACE-WITH-EXPORT; SHARED=/mnt/fedvsr;"
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_the_head_returns_small_updates_inline_as_a_local_run_does(name):
    """The head's `ray start` sets Ray's inline-result limit to the one a local run uses (DIRECT_RESULT_BYTES);
    the worker nodes take it from the head."""
    import shlex

    from fedvsr.platform.local_ray import DIRECT_RESULT_BYTES

    config = prepared(name)
    [head] = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    [flag] = [w for w in shlex.split(head) if w.startswith("--system-config=")]
    assert json.loads(flag.split("=", 1)[1]) == {"max_direct_call_object_size": DIRECT_RESULT_BYTES}
    assert not any("--system-config" in c for c in config["worker_start_ray_commands"])
