"""Scheduler connections (xtl/scheduler.py): checked, probed, refused fast with a clear message.

The endpoints are real: closed ports, an HTTP server, raw TCP servers that greet
with something else, and real dask schedulers (LocalCluster, in process).
"""
import contextlib
import http.server
import socket
import struct
import threading
import time

import pytest
from distributed import LocalCluster

from xtl.scheduler import (
    DEFAULT_TIMEOUT,
    TIMEOUT_ENV,
    SchedulerError,
    check_address,
    connect,
    probe_scheduler,
    scheduler_timeout,
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def closed_port() -> int:
    """A port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server():
    """A real HTTP server (the standard library's) on a free port, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def raw_server(greeting: bytes, linger: float = 5.0):
    """A TCP server that sends ``greeting`` on accept (if any), waits ``linger`` s, closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                if greeting:
                    conn.sendall(greeting)
                stop.wait(linger)  # then close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()


@contextlib.contextmanager
def elapsed_below(seconds):
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    assert took < seconds, f"took {took:.2f} s"


# ------------------------------------------------------------------ the address's form
@pytest.mark.parametrize("address, expected", [
    ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
    ("10.0.0.1:8786", "tcp://10.0.0.1:8786"),
    ("scheduler.example.org:8786", "tcp://scheduler.example.org:8786"),
    ("TCP://host:1", "tcp://host:1"),
    ("  tcp://host:65535 ", "tcp://host:65535"),
    ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ("tls://host:8786", "tls://host:8786"),
    ("ws://host:8786", "ws://host:8786"),
    ("wss://host:8786", "wss://host:8786"),
    ("ucx://10.0.0.1:13337", "ucx://10.0.0.1:13337"),
    ("inproc://192.0.2.2/4242/1", "inproc://192.0.2.2/4242/1"),
])
def test_addresses_of_every_dask_protocol_pass(address, expected):
    assert check_address(address) == expected


def test_a_cluster_object_gives_its_scheduler_address():
    class Cluster:
        scheduler_address = "tcp://host:8786"

    assert check_address(Cluster()) == "tcp://host:8786"


@pytest.mark.parametrize("address, message", [
    ("http://host:8787", r"protocol 'http' .*dashboard"),
    ("https://host:8787", r"protocol 'https' .*dashboard"),
    ("ftp://host:21", r"protocol 'ftp' is not one of"),
    ("host", r"no port"),
    ("tcp://host", r"no port"),
    ("tcp://host:", r"port '' is not a number"),
    ("tcp://host:0", r"port '0' is not a number in 1..65535"),
    ("tcp://host:65536", r"port '65536'"),
    ("tcp://host:-1", r"port '-1'"),
    ("tcp://host:abc", r"port 'abc'"),
    ("tcp://:8786", r"host '' is not"),
    ("tcp://host:8786/path", r"port '8786/path'"),
    ("tcp://user@host:8786", r"host 'user@host'"),
    ("tcp://::1:8786", r"IPv6 host needs brackets"),
    ("tcp://[::1]", r"IPv6 host needs brackets and a port"),
    ("tcp://[::1:8786", r"IPv6 host needs brackets and a port"),
    ("", r"no port"),
    ("inproc://", r"inproc:// needs"),
])
def test_a_malformed_address_is_refused_at_once_naming_it(address, message):
    with elapsed_below(0.5), pytest.raises(SchedulerError, match=message) as info:
        probe_scheduler(address, timeout=5)
    assert repr(address.strip()) in str(info.value) and "expected tcp://host:port" in str(
        info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConnectionError)


@pytest.mark.parametrize("address", [8786, None, b"tcp://host:8786", ("host", 8786)])
def test_an_address_that_is_not_a_string_is_a_type_error(address):
    with pytest.raises(TypeError, match=r"scheduler must be an address string"):
        check_address(address)


# ------------------------------------------------------------------ the timeout
def test_the_timeout_is_the_argument_then_the_environment_then_five_seconds(monkeypatch):
    assert scheduler_timeout() == DEFAULT_TIMEOUT == 5.0
    monkeypatch.setenv(TIMEOUT_ENV, "0.25")
    assert scheduler_timeout() == 0.25
    assert scheduler_timeout(2) == 2.0
    monkeypatch.setenv(TIMEOUT_ENV, " ")
    assert scheduler_timeout() == 5.0


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "inf", "nan", "5s"])
def test_a_bad_timeout_in_the_environment_is_refused_naming_it(monkeypatch, raw):
    monkeypatch.setenv(TIMEOUT_ENV, raw)
    with pytest.raises(ValueError, match=rf"\${TIMEOUT_ENV} must be a number of seconds > 0, "
                                         rf"got '{raw}'"):
        scheduler_timeout()


@pytest.mark.parametrize("timeout, error, message", [
    (0, ValueError, "timeout must be > 0"),
    (-1.0, ValueError, "timeout must be > 0"),
    (float("nan"), ValueError, "timeout must be a finite number"),
    (float("inf"), ValueError, "timeout must be a finite number"),
    ("5", TypeError, "timeout must be a number"),
    (True, TypeError, "timeout must be a number"),
])
def test_a_bad_timeout_argument_is_refused_naming_it(timeout, error, message):
    with pytest.raises(error, match=message):
        connect("tcp://host:8786", timeout)


# ------------------------------------------------------------------ nothing listening
@pytest.mark.parametrize("form", ["tcp://127.0.0.1:{}", "127.0.0.1:{}", "tls://127.0.0.1:{}",
                                  "ws://127.0.0.1:{}"])
def test_a_closed_port_is_refused_fast_with_what_to_do(form):
    address = form.format(closed_port())
    with elapsed_below(1.0), pytest.raises(SchedulerError) as info:
        connect(address, timeout=1)
    message = str(info.value)
    assert "no dask scheduler answers at" in message and "within 1 s (connection refused)" in message
    assert "start one with `dask scheduler`" in message and "give no scheduler" in message


@pytest.mark.parametrize("name, hint", [
    ("--scheduler", "leave --scheduler out to run a local cluster"),
    ("$DASK_SCHEDULER_ADDRESS", "unset $DASK_SCHEDULER_ADDRESS to run a local cluster"),
    ("scheduler", "give no scheduler to run a local cluster"),
])
def test_the_message_names_where_the_address_came_from(name, hint):
    with pytest.raises(SchedulerError, match=rf"^{__import__('re').escape(name)}: .*"
                                             rf"{__import__('re').escape(hint)}"):
        connect(f"tcp://127.0.0.1:{closed_port()}", timeout=1, name=name)


def test_an_unknown_host_is_refused_naming_it():
    with elapsed_below(5.0), pytest.raises(SchedulerError, match=r"unknown host 'no-such-host."
                                                                 r"invalid'"):
        connect("tcp://no-such-host.invalid:8786", timeout=1)


# ------------------------------------------------------------------ something else answers
def test_an_http_server_is_refused_without_allocating_or_hanging():
    with http_server() as port, elapsed_below(2.5), pytest.raises(SchedulerError) as info:
        connect(f"tcp://127.0.0.1:{port}", timeout=1)
    message = str(info.value)
    assert f"tcp://127.0.0.1:{port} answers but is not a dask scheduler" in message
    assert "it sent nothing within 1 s" in message and "dashboard" in message
    assert "MemoryError" not in message and "EiB" not in message


def test_the_environment_sets_the_wait(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    with http_server() as port, elapsed_below(1.5), pytest.raises(
            SchedulerError, match=r"sent nothing within 0.3 s"):
        connect(f"127.0.0.1:{port}")


@pytest.mark.parametrize("greeting, message", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", r"it sent b'SSH-2.0-', which does not start a dask message"),
    (b"HTTP/1.0 400 Bad request\r\n\r\n", r"it sent b'HTTP/1.0', which does not start"),
    (b"\xff" * 8, r"does not start a dask message"),                     # 16 EiB "length"
    (struct.pack("<Q", 1 << 40), r"does not start a dask message"),      # 1 TiB
    (struct.pack("<Q", 4), r"does not start a dask message"),            # too short
    (b"220 ", r"it sent b'220 ', which does not start"),                 # short, then silent
    (struct.pack("<Q", 24) + struct.pack("<Q", 99) + b"x" * 16, r"is not a dask handshake"),
    (struct.pack("<Q", 58) + b"x" * 10, r"is not a dask handshake"),     # truncated body
])
def test_an_endpoint_that_greets_otherwise_is_refused(greeting, message):
    with raw_server(greeting) as port, elapsed_below(1.5), pytest.raises(
            SchedulerError, match=message) as info:
        probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=1)
    assert "answers but is not a dask scheduler" in str(info.value)


def test_an_endpoint_that_closes_at_once_is_refused_at_once():
    with raw_server(b"", linger=0) as port, elapsed_below(0.8), pytest.raises(
            SchedulerError, match=r"closed the connection without sending a dask handshake"):
        probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=2)


def test_a_silent_endpoint_is_refused_when_the_timeout_ends():
    with raw_server(b"") as port:
        start = time.monotonic()
        with pytest.raises(SchedulerError, match=r"sent nothing within 0.5 s"):
            probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=0.5)
        assert 0.4 < time.monotonic() - start < 1.5


def test_tls_and_ws_only_need_the_port_to_accept():
    # their handshakes start from the client, so the probe cannot tell more
    with http_server() as port, elapsed_below(0.5):
        assert probe_scheduler(f"tls://127.0.0.1:{port}", 1) == f"tls://127.0.0.1:{port}"
        assert probe_scheduler(f"ws://127.0.0.1:{port}", 1) == f"ws://127.0.0.1:{port}"


# ------------------------------------------------------------------ a real scheduler
@pytest.mark.parametrize("protocol", [None, "tcp://"])
def test_a_real_scheduler_connects(protocol):
    kwargs = {} if protocol is None else {"protocol": protocol}  # None: inproc://
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0", **kwargs) as cluster:
        address = cluster.scheduler_address
        assert address.startswith(protocol or "inproc://")
        with elapsed_below(2.0):
            assert probe_scheduler(address, timeout=1) == address
            client = connect(address, timeout=1)
        try:
            assert client.submit(lambda x: x + 1, 41).result(timeout=10) == 42
            assert client.scheduler.address == address
        finally:
            client.close()
        with connect(cluster, timeout=1) as client:  # the cluster object itself
            assert client.scheduler.address == address


def test_a_real_tcp_scheduler_answers_the_bare_host_port_form():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0", protocol="tcp://") as cluster:
        bare = cluster.scheduler_address[len("tcp://"):]
        with connect(bare, timeout=1) as client:
            assert client.submit(sum, [1, 2]).result(timeout=10) == 3


# ------------------------------------------------------------------ where addresses are used
@pytest.mark.parametrize("how", ["scheduler", "environment"])
def test_an_ensemble_refuses_a_dead_scheduler_fast_and_runs_nothing(tmp_path, monkeypatch, how):
    from xtl.solver.ensemble import ensemble

    address = f"tcp://127.0.0.1:{closed_port()}"
    kwargs = dict(scheduler=address) if how == "scheduler" else {}
    if how == "environment":
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    name = "scheduler" if how == "scheduler" else r"\$DASK_SCHEDULER_ADDRESS"
    with elapsed_below(2.0), pytest.raises(SchedulerError, match=rf"^{name}: no dask scheduler "
                                                                 rf"answers at {address} within "
                                                                 r"1 s \(connection refused\)"):
        ensemble("tiny", seeds=0, t_end=0.2, save_interval=0.1, directory=tmp_path,
                 progress=False, timeout=1, **kwargs)
    assert not list(tmp_path.glob("*.nc"))


def test_an_ensemble_refuses_an_http_port(tmp_path):
    from xtl.solver.ensemble import ensemble

    with http_server() as port, elapsed_below(2.5), pytest.raises(
            SchedulerError, match=r"answers but is not a dask scheduler"):
        ensemble("tiny", seeds=0, t_end=0.2, save_interval=0.1, directory=tmp_path,
                 progress=False, scheduler=f"127.0.0.1:{port}", timeout=1)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(scheduler="http://host:8787"), SchedulerError, r"protocol 'http'"),
    (dict(scheduler="tcp://host"), SchedulerError, r"no port"),
    (dict(scheduler=8786), TypeError, r"scheduler must be an address string"),
    (dict(scheduler="tcp://host:8786", client=object()), ValueError, r"client= or scheduler="),
])
def test_an_experiment_refuses_a_bad_address_before_it_makes_its_folder(tmp_path, kwargs, error,
                                                                       message):
    from xtl.experiment.config import load_config
    from xtl.experiment.stages import Experiment

    with pytest.raises(error, match=message):
        Experiment(load_config(), tmp_path / "exp", **kwargs)
    assert not (tmp_path / "exp").exists()
