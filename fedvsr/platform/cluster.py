"""Joining a Ray cluster: check that an address answers before handing it to Ray.

``ray.init(address=...)`` on an address where no cluster listens retries for minutes (measured:
3 min 24 s for a closed port on this machine) and ends in a traceback. :func:`probe_gcs` answers
within ``timeout`` seconds: it opens a TCP connection to the address and sends the HTTP/2 client
preface, which Ray's GCS (a gRPC server) answers with a SETTINGS frame; a closed port, a host that
does not answer, or a server that speaks another protocol gives a :class:`ClusterUnreachable` that
names the address and what to check.
"""

from __future__ import annotations

import socket

from fedvsr.config import ConfigError

#: the HTTP/2 client connection preface (RFC 9113, 3.4) followed by an empty SETTINGS frame
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_FRAME_TYPE = 0x04
DEFAULT_PORT = 6379


class ClusterUnreachable(ConfigError):
    """No Ray cluster answers at the configured address; the message says what to check."""


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"``, ``"ray://host:port"`` or ``"[::1]:port"`` -> ``(host, port)``; port 6379 if absent."""
    addr = address.strip()
    for scheme in ("ray://", "gcs://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme):]
    if addr.startswith("["):  # [ipv6]:port
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":")
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    if not host:
        raise ClusterUnreachable(f"platform.address = {address!r} names no host; expected host:port, e.g. "
                                 f"127.0.0.1:{DEFAULT_PORT}, or 'auto'")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ClusterUnreachable(f"platform.address = {address!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ClusterUnreachable(f"platform.address = {address!r}: port {number} is out of range 1-65535")
    return host, number


def _hint(address: str) -> str:
    return (f"check that `ray start --head` runs there (its output names the address, default port "
            f"{DEFAULT_PORT}), that this machine can reach that host and port, or use platform.address='auto' "
            f"on a node of the cluster; address given: {address!r}")


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
        raise ClusterUnreachable(f"no Ray cluster at {host}:{port}: the host name does not resolve ({err}); "
                                 + _hint(address)) from None
    except TimeoutError:
        raise ClusterUnreachable(f"no Ray cluster answered at {host}:{port} within {timeout:g} s; "
                                 + _hint(address)) from None
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

    if address != "auto":
        probe_gcs(address, timeout)
    try:
        ray.init(address=address, **init_kwargs)
    except ConnectionError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if address == "auto":
            raise ClusterUnreachable(
                "platform.address = 'auto' but no running Ray cluster was found from this machine (no "
                "`ray start` session here and RAY_ADDRESS unset); start one with `ray start --head` or give "
                f"its host:port. Ray said: {first}"
            ) from None
        raise ClusterUnreachable(f"could not join the Ray cluster at {address!r}: {first}; " + _hint(address)) from None
