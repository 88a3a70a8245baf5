"""A loopback TCP proxy that breaks the network on demand, for fault tests.

``FaultProxy(target_port).start()`` listens on 127.0.0.1 and forwards every connection to the target:

- ``cut()`` resets every open connection (RST; ``reset=False`` closes them with a FIN instead);
- ``stall()`` stops forwarding while connections stay open, ``unstall()`` delivers what was held back;
- ``refuse(seconds)`` resets new connections for a while (accepted and reset at once: closing the port
  instead would let another process take it meanwhile);
- ``tls=`` terminates TLS towards the clients and speaks plaintext to the target (a TLS endpoint in
  front of a plaintext server; the secured Kafka of tests/reliability/test_security.py serves TLS itself).

The proxy runs an asyncio loop in one daemon thread; the public methods are called from any thread and
return once the change is in effect. ``make_certificates`` writes the throwaway CA and server certificate
that such a TLS endpoint needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

HOST = "127.0.0.1"
_CHUNK = 65536
_CALL_TIMEOUT_S = 10.0
_HANDSHAKE_TIMEOUT_S = 10.0
_T = TypeVar("_T")


class FaultProxy:
    def __init__(self, target_port: int, *, target_host: str = HOST, port: int = 0, tls: ssl.SSLContext | None = None):
        self._target = (target_host, target_port)
        self._requested_port = port
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing: asyncio.Event | None = None
        self._refuse_until = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Stop listening, close every connection and end the loop's thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------------
    @property
    def connections(self) -> int:
        return self._call(self._count())

    def cut(self, reset: bool = True) -> int:
        """Break every open connection on both sides; returns how many there were."""
        return self._call(self._cut(reset))

    def stall(self) -> None:
        self._call(self._flow(False))

    def unstall(self) -> None:
        self._call(self._flow(True))

    def refuse(self, seconds: float) -> None:
        """Reset every connection that arrives in the next ``seconds``."""
        self._call(self._refuse(seconds))

    # -- the loop's side -------------------------------------------------------------------------
    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_CALL_TIMEOUT_S)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, HOST, self._requested_port)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut(reset=False)
        for task in self._tasks:  # connections still in their handshake or connecting to the target
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _count(self) -> int:
        return len(self._links)

    async def _cut(self, reset: bool) -> int:
        links, self._links = self._links, set()
        for link in links:
            link.close(reset)
        return len(links)

    async def _flow(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _refuse(self, seconds: float) -> None:
        self._refuse_until = self._loop.time() + seconds

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(client_reader, client_writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._loop.time() < self._refuse_until:
            _close(client_writer, reset=True)
            return
        try:
            if self._tls is not None:
                await client_writer.start_tls(self._tls, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT_S)
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:  # a failed or timed-out handshake, or a target that is down: drop the client
            _close(client_writer, reset=True)
            return
        link = _Link(client_writer, target_writer)
        self._links.add(link)
        try:
            await link.run(self._pump(client_reader, target_writer), self._pump(target_reader, client_writer))
        finally:
            self._links.discard(link)
            link.close(reset=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while data := await reader.read(_CHUNK):
            await self._flowing.wait()  # stalled: hold this chunk, read nothing more (TCP pushes back)
            writer.write(data)
            await writer.drain()


class _Link:
    """One proxied connection: the client's side and the target's side."""

    def __init__(self, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
        self._writers = (client, target)

    async def run(self, *pumps: Awaitable[None]) -> None:
        """Forward both ways until either side ends; the other side is then closed too."""
        tasks = [asyncio.ensure_future(pump) for pump in pumps]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self, reset: bool) -> None:
        for writer in self._writers:
            _close(writer, reset)


def _close(writer: asyncio.StreamWriter, reset: bool) -> None:
    transport = writer.transport
    if transport.is_closing():
        return
    if reset:
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            # Linger on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


@dataclass(frozen=True)
class Certificates:
    ca: Path  # PEM of the CA that signed the certificate: what the other side trusts
    cert: Path  # the certificate: a server's for 127.0.0.1 and localhost, or a client's
    key: Path  # its private key (PKCS#8 PEM)
    ca_key: Path  # the CA's private key (unencrypted PKCS#8 PEM), to sign more certificates with `issuer=`

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_certificates(
    directory: Path,
    name: str = "test",
    key_password: str | None = None,
    *,
    subject: str = "localhost",
    issuer: Certificates | None = None,
    expired: bool = False,
) -> Certificates:
    """A certificate with CN `subject` for 127.0.0.1 and localhost, valid for a day (or `expired` a day ago),
    signed by `issuer`'s CA or by a fresh CA of its own; its key is encrypted with ``key_password`` when one is
    given (needs the `cryptography` package)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import load_pem_x509_certificate

    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    directory.mkdir(parents=True, exist_ok=True)
    if issuer is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(f"{name} CA", ca_key, f"{name} CA", ca_key)
        files = Certificates(*(directory / f"{name}-{part}.pem" for part in ("ca", "cert", "key", "ca-key")))
        files.ca.write_bytes(ca.public_bytes(pem))
        files.ca_key.write_bytes(ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    else:
        ca_key = serialization.load_pem_private_key(issuer.ca_key.read_bytes(), None)
        ca = load_pem_x509_certificate(issuer.ca.read_bytes())
        files = Certificates(issuer.ca, directory / f"{name}-cert.pem", directory / f"{name}-key.pem", issuer.ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = ca.subject.rfc4514_string().removeprefix("CN=")
    files.cert.write_bytes(_certificate(subject, key, issuer_name, ca_key, expired).public_bytes(pem))
    encryption = (
        serialization.BestAvailableEncryption(key_password.encode()) if key_password else serialization.NoEncryption()
    )
    files.key.write_bytes(key.private_bytes(pem, pkcs8, encryption))
    return files


def _certificate(subject: str, key: Any, issuer: str, issuer_key: Any, expired: bool = False) -> Any:
    """An X.509 certificate; a CA's when it signs itself, else one for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    ca = key is issuer_key
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2 if expired else 0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())
