"""Connections to a dask scheduler: an address checked, probed, then connected.

:func:`connect` is the one place where a scheduler address becomes a
``distributed.Client``. Before the client is made, the address is

1. checked for its form (:func:`check_address`): ``tcp://host:port``,
   ``host:port`` (tcp), ``tls://``, ``ws://``, ``wss://``, ``ucx://host:port`` or
   ``inproc://...``; anything else is refused at once, naming it;
2. probed (:func:`probe_scheduler`) with a plain socket and a short timeout
   (:func:`scheduler_timeout`: the argument, else ``$XTL_SCHEDULER_TIMEOUT``,
   else 5 s): an address where nothing listens is refused in that time, and a
   ``tcp://`` endpoint that answers but is not a dask scheduler (a web server,
   the dashboard's port, an SSH server) is refused without reading more than a
   dask handshake's worth of bytes. A dask scheduler sends its handshake (a
   small length-prefixed message) as soon as it accepts a connection, so the
   probe only reads; it never writes to the endpoint.

Every refusal is a :class:`SchedulerError` (a :class:`ConnectionError` and a
:class:`ValueError`: the address given is not usable), whose message names the
argument, the address and what to do.
"""
from __future__ import annotations

import math
import os
import socket
import struct
import time

from .options import check_float

__all__ = ["SchedulerError", "check_address", "scheduler_timeout", "probe_scheduler", "connect",
           "handshake_problem",
           "DEFAULT_TIMEOUT", "TIMEOUT_ENV", "PROTOCOLS"]

#: Seconds a probe waits for a scheduler unless told otherwise.
DEFAULT_TIMEOUT = 5.0
#: The environment variable that sets the timeout (seconds) for the whole process.
TIMEOUT_ENV = "XTL_SCHEDULER_TIMEOUT"
#: The dask comm protocols an address may name.
PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
#: The largest first message a scheduler's handshake may be (it is ~60 bytes).
HANDSHAKE_LIMIT = 1 << 16
_FORM = "tcp://host:port (e.g. tcp://10.0.0.1:8786), host:port, or tls://, ws://, wss://, " \
        "ucx://host:port, inproc://..."


class SchedulerError(ConnectionError, ValueError):
    """A scheduler address that is malformed, unreachable, or not a dask scheduler."""


def _split_host_port(location: str, address: str, name: str) -> tuple:
    """``(host, port)`` of ``host:port`` or ``[ipv6]:port``, or a SchedulerError."""
    def bad(why):
        raise SchedulerError(f"{name}={address!r} is not a scheduler address: {why}; "
                             f"expected {_FORM}")

    if location.startswith("["):
        host, sep, tail = location[1:].partition("]")
        if not sep or not tail.startswith(":"):
            bad("an IPv6 host needs brackets and a port, like tcp://[::1]:8786")
        port = tail[1:]
    else:
        host, sep, port = location.rpartition(":")
        if not sep:
            bad("it has no port (a dask scheduler listens at port 8786 by default)")
        if ":" in host:
            bad("an IPv6 host needs brackets, like tcp://[::1]:8786")
    if not host or any(c in host for c in "/ \t@?#"):
        bad(f"the host {host!r} is not a host name or IP address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        bad(f"the port {port!r} is not a number in 1..65535")
    return host, int(port)


def check_address(address, name: str = "scheduler") -> str:
    """A scheduler address in its full form (``host:port`` → ``tcp://host:port``).

    Parameters
    ----------
    address : str or object with ``.scheduler_address``
        An address, or a cluster object (``LocalCluster``, a dask-jobqueue
        cluster) whose ``scheduler_address`` is one.
    name : str
        How the caller names the address in messages (``"scheduler"``,
        ``"--scheduler"``, ``"$DASK_SCHEDULER_ADDRESS"``).

    Raises
    ------
    TypeError
        Not a string nor an object with a string ``scheduler_address``.
    SchedulerError
        A protocol dask does not speak (``http://`` names the dashboard, not the
        scheduler), no host, no port, or a port out of range.
    """
    value = getattr(address, "scheduler_address", address)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be an address string like 'tcp://host:8786' or a cluster "
                        f"object with .scheduler_address, got {address!r}")
    text = value.strip()
    protocol, sep, location = text.rpartition("://")
    protocol = protocol.lower() if sep else "tcp"
    if protocol not in PROTOCOLS:
        hint = (" (http:// is the dashboard's address; the scheduler's is tcp://host:8786)"
                if protocol in ("http", "https") else "")
        raise SchedulerError(f"{name}={value!r} is not a scheduler address: protocol "
                             f"{protocol!r} is not one of {list(PROTOCOLS)}{hint}; "
                             f"expected {_FORM}")
    if protocol == "inproc":
        if not location or any(c.isspace() for c in location):
            raise SchedulerError(f"{name}={value!r} is not a scheduler address: inproc:// needs "
                                 "the in-process scheduler's location, e.g. the "
                                 f"scheduler_address of LocalCluster(processes=False); "
                                 f"expected {_FORM}")
        return f"inproc://{location}"
    _split_host_port(location, value, name)
    return f"{protocol}://{location}"


def scheduler_timeout(timeout=None) -> float:
    """Seconds to wait for a scheduler: ``timeout``, else ``$XTL_SCHEDULER_TIMEOUT``, else 5.

    Raises
    ------
    TypeError, ValueError
        ``timeout`` (or the environment variable) is not a finite number > 0.
    """
    if timeout is not None:
        return check_float(timeout, "timeout", positive=True)
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _leave_out(name: str) -> str:
    """How to do without the scheduler named ``name``."""
    if name.startswith("$"):
        return f"unset {name}"
    return f"leave {name} out" if name.startswith("-") else f"give no {name}"


def _open_socket(host: str, port: int, timeout: float):
    """A connected socket, or the reason there is none (a short phrase)."""
    try:
        return socket.create_connection((host, port), timeout=timeout), None
    except (socket.timeout, TimeoutError):
        return None, "timed out"
    except ConnectionRefusedError:
        return None, "connection refused"
    except socket.gaierror as err:
        return None, f"unknown host {host!r}: {err.strerror}"
    except OSError as err:
        return None, err.strerror or type(err).__name__


def _read(sock, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes before ``deadline`` (fewer: the peer closed or time ran out)."""
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except OSError:  # socket.timeout too
            break
        if not chunk:
            break
        data += chunk
    return data


def handshake_problem(sock, timeout: float):
    """Why the bytes a freshly accepted connection sends are not a dask handshake (or None).

    A dask scheduler writes one framed message at once: an 8-byte little-endian
    length, then that many bytes starting with the frame count and the frames'
    lengths. Nothing beyond :data:`HANDSHAKE_LIMIT` bytes is read or allocated.

    Parameters
    ----------
    sock : socket.socket
        Connected, nothing sent on it.
    timeout : float
        Seconds to wait for the message.

    Returns
    -------
    str or None
        A phrase ("it sent nothing within 5 s", "it sent b'HTTP/1.0'..."), or None
        for a dask handshake.
    """
    deadline = time.monotonic() + timeout
    head = _read(sock, 8, deadline)
    if not head:
        if time.monotonic() < deadline:
            return "it closed the connection without sending a dask handshake"
        return (f"it sent nothing within {_seconds(timeout)} (a dask scheduler greets at once; "
                f"a web server or the dashboard, usually at port 8787, waits for a request)")
    (length,) = struct.unpack("<Q", head.ljust(8, b"\0"))
    if len(head) < 8 or not 16 <= length <= HANDSHAKE_LIMIT:
        return f"it sent {head!r}, which does not start a dask message"
    body = _read(sock, length, deadline)
    (frames,) = struct.unpack("<Q", body[:8].ljust(8, b"\0"))
    if len(body) < length or not 1 <= frames <= (length - 8) // 8:
        return f"it sent {(head + body)[:24]!r}..., which is not a dask handshake"
    return None


def probe_scheduler(address, timeout=None, *, name: str = "scheduler") -> str:
    """Refuse, in about ``timeout`` seconds, an address where no dask scheduler answers.

    ``tcp://`` addresses are connected with a plain socket and must send a dask
    handshake (:func:`handshake_problem`); ``tls://``, ``ws://`` and ``wss://``
    ones must accept a connection (their handshake starts from the client);
    ``inproc://`` and ``ucx://`` ones are only checked for their form.

    Parameters
    ----------
    address : str or object with ``.scheduler_address``
    timeout : float, optional
        Seconds (default :func:`scheduler_timeout`).
    name : str
        How the caller names the address in messages.

    Returns
    -------
    str
        The address in its full form (:func:`check_address`).

    Raises
    ------
    SchedulerError
        Malformed; nothing listening (refused, timed out, unknown host); or an
        endpoint that is not a dask scheduler.
    """
    address = check_address(address, name)
    timeout = scheduler_timeout(timeout)
    protocol, _, location = address.partition("://")
    if protocol in ("inproc", "ucx"):
        return address
    host, port = _split_host_port(location, address, name)
    sock, why = _open_socket(host, port, timeout)
    if sock is None:
        raise SchedulerError(
            f"{name}: no dask scheduler answers at {address} within {_seconds(timeout)} "
            f"({why}); start one with `dask scheduler`, or {_leave_out(name)} to run a "
            f"local cluster")
    with sock:
        problem = handshake_problem(sock, timeout) if protocol == "tcp" else None
    if problem is not None:
        raise SchedulerError(
            f"{name}: {address} answers but is not a dask scheduler: {problem}. Give the "
            f"scheduler's address (`dask scheduler` prints it; port 8786 by default), or "
            f"{_leave_out(name)} to run a local cluster")
    return address


def connect(address, timeout=None, *, name: str = "scheduler", set_as_default: bool = False):
    """A ``distributed.Client`` of the scheduler at ``address``, probed first.

    Parameters
    ----------
    address : str or object with ``.scheduler_address``
        ``tcp://host:port``, ``host:port``, ``inproc://...``, ... (see :func:`check_address`).
    timeout : float, optional
        Seconds to wait for the scheduler (default :func:`scheduler_timeout`:
        ``$XTL_SCHEDULER_TIMEOUT``, else 5).
    name : str
        How the caller names the address in messages (``"--scheduler"``, ...).
    set_as_default : bool
        Make the client the process's default dask scheduler.

    Returns
    -------
    distributed.Client
        The caller closes it.

    Raises
    ------
    SchedulerError
        As :func:`probe_scheduler`, or the client could not connect in ``timeout``.
    """
    timeout = scheduler_timeout(timeout)
    address = probe_scheduler(address, timeout, name=name)
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=set_as_default)
    except (OSError, TimeoutError) as err:
        raise SchedulerError(f"{name}: could not connect a dask client to {address} within "
                             f"{_seconds(timeout)}: {err}") from err
