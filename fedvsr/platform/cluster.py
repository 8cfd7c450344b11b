"""Joining a Ray cluster: check that an address answers before handing it to Ray.

``ray.init(address=...)`` on an address where no cluster listens retries for minutes (measured:
3 min 24 s for a closed port on this machine) and ends in a traceback. :func:`probe_gcs` answers
within ``timeout`` seconds: it opens a TCP connection to the address and sends the HTTP/2 client
preface, which Ray's GCS (a gRPC server) answers with a SETTINGS frame; a closed port, a host that
does not answer, or a server that speaks another protocol gives a :class:`ClusterUnreachable` that
names the address and what to check.

A cluster with Ray's token authentication on (``RAY_AUTH_MODE=token`` on its nodes, as ``cluster.yaml`` starts
it) answers the probe too, but refuses a driver that sends no token or another one; Ray's own ``ray.init``
then retries for 20 s and ends in ``ConnectionError: Failed to connect``. :func:`probe_auth` asks the GCS for
its cluster id with the token this process would send (Ray's own gRPC channel, so the same token source and
mode) and turns a refusal into a :class:`ClusterAuthRefused` that says which token was sent and how to give
the right one. Errors about folders the nodes must share (:class:`SharedStorageError`) live here too: they
are errors of the cluster's set-up, not of the experiment's config.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from fedvsr.config import ConfigError

#: the HTTP/2 client connection preface (RFC 9113, 3.4) followed by an empty SETTINGS frame
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_FRAME_TYPE = 0x04
DEFAULT_PORT = 6379


class ClusterUnreachable(ConfigError):
    """No Ray cluster answers at the configured address; the message says what to check."""


class ClusterAuthRefused(ClusterUnreachable):
    """A Ray cluster answers at the address but refuses this driver's authentication token (or its lack of one)."""


class SharedStorageError(ClusterUnreachable):
    """A folder every node of the cluster must see (a sweep's folder, a dataset) is missing on some node."""


#: where the cluster's token is documented (the message of every auth error points there)
CLUSTER_DOC = "docs/cluster.md"


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"``, ``"ray://host:port"`` or ``"[::1]:port"`` -> ``(host, port)``; port 6379 if absent."""
    addr = address.strip()
    if addr.startswith(("http://", "https://")):
        raise ClusterUnreachable(
            f"platform.address = {address!r} is an HTTP address (the dashboard's, which `ray job submit --address` "
            f"takes); fedvsr joins the cluster's GCS: give host:port (default port {DEFAULT_PORT}), e.g. "
            f"127.0.0.1:{DEFAULT_PORT}, or submit the command itself with `ray job submit --address {addr} -- ...`"
        )
    for scheme in ("ray://", "gcs://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme) :]
    if addr.startswith("["):  # [ipv6]:port
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":")
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    if not host:
        raise ClusterUnreachable(
            f"platform.address = {address!r} names no host; expected host:port, e.g. "
            f"127.0.0.1:{DEFAULT_PORT}, or 'auto'"
        )
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ClusterUnreachable(f"platform.address = {address!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ClusterUnreachable(f"platform.address = {address!r}: port {number} is out of range 1-65535")
    return host, number


def _hint(address: str) -> str:
    return (
        f"check that `ray start --head` runs there (its output names the address, default port "
        f"{DEFAULT_PORT}), that this machine can reach that host and port, or use platform.address='auto' "
        f"on a node of the cluster; address given: {address!r}"
    )


def probe_gcs(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`ClusterUnreachable` unless a gRPC server (Ray's GCS) answers at ``address`` within
    ``timeout`` seconds."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)
            header = b""
            while len(header) < 9:
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    break
                header += chunk
    except socket.gaierror as err:
        raise ClusterUnreachable(
            f"no Ray cluster at {host}:{port}: the host name does not resolve ({err}); " + _hint(address)
        ) from None
    except TimeoutError:
        raise ClusterUnreachable(
            f"no Ray cluster answered at {host}:{port} within {timeout:g} s; " + _hint(address)
        ) from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise ClusterUnreachable(f"no Ray cluster at {host}:{port}: {reason}; " + _hint(address)) from None
    if len(header) < 9 or header[3] != _SETTINGS_FRAME_TYPE:
        raise ClusterUnreachable(
            f"{host}:{port} answers, but not as a Ray cluster (no gRPC/HTTP2 reply): is it the port of Ray's "
            f"GCS? " + _hint(address)
        )


def join_cluster(address: str, timeout: float = 5.0, **init_kwargs) -> None:
    """``ray.init(address=...)`` for a running cluster, failing within about ``timeout`` seconds with a
    :class:`ClusterUnreachable` instead of Ray's minutes of retries and traceback."""
    import ray
    from ray.exceptions import AuthenticationError

    if address != "auto":
        probe_gcs(address, timeout)
        probe_auth(address, timeout)
    try:
        ray.init(address=address, **init_kwargs)
    except AuthenticationError as err:  # 'auto' with RAY_AUTH_MODE=token and no token here
        raise ClusterAuthRefused(
            f"could not join the Ray cluster at {address!r}: {_first_line(err)} " + _token_hint()
        ) from None
    except ConnectionError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if address == "auto":
            raise ClusterUnreachable(
                "platform.address = 'auto' but no running Ray cluster was found from this machine (no "
                "`ray start` session here and RAY_ADDRESS unset); start one with `ray start --head` or give "
                f"its host:port. Ray said: {first}"
            ) from None
        raise ClusterUnreachable(f"could not join the Ray cluster at {address!r}: {first}; " + _hint(address)) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def token_source() -> str:
    """Where Ray reads this process's token from, in Ray's order: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the default
    file ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"the file {os.environ['RAY_AUTH_TOKEN_PATH']} (RAY_AUTH_TOKEN_PATH)"
    return f"the file {Path.home() / '.ray' / 'auth_token'} (Ray's default; RAY_AUTH_TOKEN_PATH unset)"


def _token_hint() -> str:
    return (
        "Give this driver the cluster's token: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<file holding "
        f"the token> (or RAY_AUTH_TOKEN=<token>); see {CLUSTER_DOC}"
    )


def probe_auth(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`ClusterAuthRefused` when the Ray cluster at ``address`` refuses the token this process would
    send (module docstring). Does nothing where grpcio is missing (Ray without its ``default`` extra): Ray's own
    error then stands."""
    try:
        import grpc
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    host, port = split_address(address)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sends_token = is_token_auth_enabled()
    channel = None
    try:
        channel = init_grpc_channel(target)
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
    except AuthenticationError:  # RAY_AUTH_MODE=token here, but no token to send
        raise ClusterAuthRefused(
            f"RAY_AUTH_MODE=token but this driver has no Ray token to send to the cluster at {host}:{port} "
            f"(looked in {token_source()}). " + _token_hint()
        ) from None
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAUTHENTICATED:
            return  # not an auth matter: ray.init reports it
        if sends_token:
            why = (
                f"the Ray cluster at {host}:{port} refused this driver's token, read from {token_source()}: it "
                "is not the token the cluster's nodes were started with. "
            )
        else:
            why = (
                f"the Ray cluster at {host}:{port} has token authentication on and refused this driver, which "
                "sends no token (RAY_AUTH_MODE is not 'token' here). "
            )
        raise ClusterAuthRefused(why + _token_hint()) from None
    finally:
        if channel is not None:
            channel.close()


def probe_dashboard(url: str, timeout: float = 5.0) -> str:
    """Check what ``ray job submit --address URL`` will meet at a Ray dashboard (the job-submission API, usually
    reached through ``ray dashboard cluster.yaml``'s SSH tunnel): raise :class:`ClusterUnreachable` when nothing
    answers there and :class:`ClusterAuthRefused` when the dashboard refuses the token this process would send
    (Ray's own HTTP headers, so the same token source and mode as ``ray job submit``). Returns the Ray version the
    dashboard reports."""
    import json
    import urllib.error
    import urllib.request

    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ClusterUnreachable(f"{url!r} is not a dashboard URL (http://host:port, 8265 by default)")
    from ray.exceptions import AuthenticationError

    sends_token = is_token_auth_enabled()
    try:
        headers = get_auth_headers_if_auth_enabled({}) if sends_token else {}
    except AuthenticationError:
        headers = {}
    if sends_token and not headers:
        raise ClusterAuthRefused(
            f"RAY_AUTH_MODE=token but this machine has no Ray token to send to the dashboard at {base} (looked "
            f"in {token_source()}). " + _token_hint()
        )
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/api/jobs/", headers=headers), timeout=timeout):
            pass
        with urllib.request.urlopen(
            urllib.request.Request(f"{base}/api/version", headers=headers), timeout=timeout
        ) as reply:
            return str(json.loads(reply.read()).get("ray_version", "?"))
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403):
            raise ClusterUnreachable(
                f"{base} answers HTTP {err.code} to the job API: is it a Ray dashboard? " + _tunnel_hint()
            ) from None
        if sends_token and err.code == 403:
            why = (
                f"the Ray dashboard at {base} refused this machine's token, read from {token_source()}: it is "
                "not the token the cluster's nodes were started with. "
            )
        else:
            why = (
                f"the Ray dashboard at {base} has token authentication on and refused this machine, which sends "
                "no token (RAY_AUTH_MODE is not 'token' here). "
            )
        raise ClusterAuthRefused(why + _token_hint()) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ClusterUnreachable(f"no Ray dashboard answers at {base}: {reason}; " + _tunnel_hint()) from None


def _tunnel_hint() -> str:
    return (
        "a cluster's dashboard listens on the head's 127.0.0.1 only: forward it with `ray dashboard cluster.yaml` "
        f"(in another terminal) and give the local end, e.g. http://127.0.0.1:8265; see {CLUSTER_DOC}"
    )


def check_cluster(address: str, timeout: float = 5.0) -> str:
    """``fedvsr check``: what a driver (``host:port``, the GCS) or ``ray job submit`` (``http://...``, the
    dashboard) will meet at ``address``, as one line; raises the errors of :func:`probe_gcs`, :func:`probe_auth` and
    :func:`probe_dashboard`."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    token = f"token from {token_source()}" if is_token_auth_enabled() else "no token (RAY_AUTH_MODE is not 'token')"
    if address.strip().startswith(("http://", "https://")):
        version = probe_dashboard(address, timeout)
        return f"ok: the Ray dashboard at {address} (Ray {version}) accepts `ray job submit` from here ({token})"
    probe_gcs(address, timeout)
    probe_auth(address, timeout)
    return f"ok: the Ray cluster at {address} accepts a fedvsr driver from here ({token})"


# ----------------------------------------------------------------------------- errors and shared storage
# (a Ray error's root cause, and whether every node sees a sweep's folder; used by the sweeps and train-central)

#: the file of a sweep folder holding a random id written by the sweep driver; a trial that cannot read the same id
#: there is not seeing the folder (:func:`check_sweep_folder`)
SWEEP_ID_FILE = "sweep-id"


def root_cause(err: BaseException) -> str:
    """``"Type: message"`` of the error that started it all: Ray wraps an error raised inside an actor
    (a coordinator that cannot read its data) in its own errors, whose text ends with the original one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and cause is not err:
        return root_cause(cause)
    text = str(err).strip()
    found = re.findall(r"^(\w+(?:Error|Exception|Unreachable)): (.+)$", text, flags=re.MULTILINE)
    if found and type(err).__module__.startswith("ray"):
        kind, message = found[-1]
        return f"{kind}: {message.strip()}"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()


def this_node() -> dict[str, str]:
    """``{"node_ip", "node_id", "hostname"}`` of the Ray node this process runs on."""
    import ray

    return {
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
    }


def _storage_hint(sweep_dir: str | os.PathLike) -> str:
    return (
        f"on a cluster of several nodes the sweep's --out ({str(sweep_dir)!r}) must be on a file system every "
        f"node mounts at the same path (NFS, EFS, Filestore), see {CLUSTER_DOC}"
    )


def _sweep_folder_problem(sweep_dir: str | os.PathLike, sweep_id: str) -> str | None:
    """What is wrong with the sweep folder as this node sees it (None: it holds the driver's ``sweep-id``)."""
    marker = Path(sweep_dir) / SWEEP_ID_FILE
    try:
        found = marker.read_text().strip()
    except OSError:
        return f"{str(marker)!r} is not there"
    return None if found == sweep_id else f"{str(marker)!r} holds another sweep (its sweep-id differs)"


def check_sweep_folder(sweep_dir: str | os.PathLike, sweep_id: str) -> None:
    """Raise :class:`SharedStorageError` unless this node sees the sweep folder the driver made (its ``sweep-id``)."""
    problem = _sweep_folder_problem(sweep_dir, sweep_id)
    if problem:
        node = this_node()
        raise SharedStorageError(
            f"node {node['node_ip']} ({node['hostname']}, node id {node['node_id'][:12]}) does "
            f"not see the sweep folder: {problem}; " + _storage_hint(sweep_dir)
        )


def _look_from_node(sweep_dir: str, sweep_id: str, folders: dict[str, str]) -> list[str]:
    """On one node: what it fails to see (an empty list when it sees everything)."""
    problem = _sweep_folder_problem(sweep_dir, sweep_id)
    problems = [problem] if problem else []
    for key, folder in folders.items():
        if not Path(folder).is_dir():
            problems.append(f"{key} = {folder!r} is not a folder there")
    return problems


def check_nodes_see(
    sweep_dir: str | os.PathLike, sweep_id: str, folders: dict[str, str] | None = None, timeout: float = 120.0
) -> int:
    """Run a zero-CPU task on every alive node of the connected Ray cluster that checks it sees the sweep folder
    (and each of ``folders``, ``{config key: path}``); raise one :class:`SharedStorageError` naming every node that
    does not. Returns the number of nodes checked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    look = ray.remote(num_cpus=0, max_retries=0)(_look_from_node)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    pending = {
        look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(sweep_dir), sweep_id, folders or {}
        ): n
        for n in nodes
    }
    ready, missing = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    problems = []
    for ref in ready:
        node = pending[ref]
        try:
            found = ray.get(ref)
        except Exception as err:  # the node died meanwhile, or cannot start a worker
            found = [f"the check failed there: {root_cause(err)}"]
        problems += [f"node {node['NodeManagerAddress']} ({node['NodeID'][:12]}): {p}" for p in found]
    problems += [
        f"node {pending[ref]['NodeManagerAddress']} ({pending[ref]['NodeID'][:12]}): did not answer within "
        f"{timeout:g} s"
        for ref in missing
    ]
    if problems:
        raise SharedStorageError(
            f"{len({p.split(':', 1)[0] for p in problems})} of {len(nodes)} nodes of the "
            "cluster do not see what the sweep needs: "
            + "; ".join(problems)
            + "; "
            + _storage_hint(sweep_dir)
            + " (and so must the dataset folders)"
        )
    return len(nodes)
