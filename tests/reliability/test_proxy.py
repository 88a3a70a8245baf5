"""The fault proxy against a tiny echo server: forwarding, cut, stall, refusal, TLS, a clean stop."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.proxy import HOST, FaultProxy, make_certificates

TIMEOUT_S = 5.0
QUIET_S = 0.5  # how long "nothing arrives" is watched


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer((HOST, 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    with FaultProxy(echo) as running:
        yield running


def connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=TIMEOUT_S)


def echoed(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def ended(sock: socket.socket) -> str:
    """How the peer ended the connection: 'reset' or 'closed' (the test fails if it stays open)."""
    try:
        return "closed" if sock.recv(1) == b"" else "data"
    except ConnectionResetError:
        return "reset"


def new_connection_ends(port: int) -> str:
    """ended() for a fresh connection; a reset can arrive while connect() still waits."""
    try:
        sock = connect(port)
    except ConnectionResetError:
        return "reset"
    with sock:
        return ended(sock)


def test_forwards_both_ways_including_more_than_a_buffer(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: several chunks, with back pressure
    with connect(proxy.port) as sock:
        assert echoed(sock, b"hello") == b"hello"
        assert echoed(sock, payload) == payload
        assert proxy.connections == 1


def test_cut_resets_every_open_connection_and_new_ones_still_work(proxy: FaultProxy) -> None:
    with connect(proxy.port) as first, connect(proxy.port) as second:
        assert echoed(first, b"a") == b"a" and echoed(second, b"b") == b"b"
        assert proxy.cut() == 2
        assert (ended(first), ended(second)) == ("reset", "reset")
    assert proxy.connections == 0
    with connect(proxy.port) as again:
        assert echoed(again, b"back") == b"back"


def test_cut_without_reset_closes_cleanly(proxy: FaultProxy) -> None:
    with connect(proxy.port) as sock:
        assert echoed(sock, b"x") == b"x"
        assert proxy.cut(reset=False) == 1
        assert ended(sock) == "closed"


def test_stall_holds_bytes_on_an_open_connection_until_unstall(proxy: FaultProxy) -> None:
    with connect(proxy.port) as sock:
        assert echoed(sock, b"warm") == b"warm"
        proxy.stall()
        sock.sendall(b"held")
        sock.settimeout(QUIET_S)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        assert proxy.connections == 1
        proxy.unstall()
        sock.settimeout(TIMEOUT_S)
        assert sock.recv(4) == b"held"


def test_refuse_resets_new_connections_until_it_ends(proxy: FaultProxy) -> None:
    with connect(proxy.port) as before:
        assert echoed(before, b"x") == b"x"  # through the proxy already, not only accepted by the kernel
        proxy.refuse(60)
        assert new_connection_ends(proxy.port) == "reset"
        assert echoed(before, b"open ones live on") == b"open ones live on"
    proxy.refuse(0)
    with connect(proxy.port) as after:
        assert echoed(after, b"ok") == b"ok"


def test_a_target_that_is_down_resets_the_client() -> None:
    with socket.socket() as closed:
        closed.bind((HOST, 0))
        port = closed.getsockname()[1]
    with FaultProxy(port) as proxy:
        assert new_connection_ends(proxy.port) == "reset"


def test_tls_is_terminated_for_clients_that_trust_the_ca(echo: int, tmp_path: Path) -> None:
    certificates, stranger = make_certificates(tmp_path, "good"), make_certificates(tmp_path, "other")
    with FaultProxy(echo, tls=certificates.server_context()) as proxy:
        with certificates.client_context().wrap_socket(connect(proxy.port), server_hostname=HOST) as sock:
            assert echoed(sock, b"secret") == b"secret"
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            stranger.client_context().wrap_socket(connect(proxy.port), server_hostname=HOST),
        ):
            pass


def test_stop_closes_connections_frees_the_port_and_ends_its_thread(echo: int) -> None:
    proxy = FaultProxy(echo).start()
    port = proxy.port
    sock = connect(port)
    assert echoed(sock, b"x") == b"x"
    proxy.stop()
    assert ended(sock) == "closed"
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    assert not any(thread.name == "fault-proxy" for thread in threading.enumerate())
