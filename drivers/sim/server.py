"""Servers that put a simulated instrument on a real transport.

* :class:`TcpServer`: a raw-socket instrument on 127.0.0.1 (port picked by the
  OS), reached by pyvisa as ``TCPIP0::127.0.0.1::PORT::SOCKET``.
* :class:`PtyServer`: a serial instrument on a pseudo-terminal, reached by
  pyvisa-py/pyserial as ``ASRL/dev/pts/N::INSTR``.

Both read bytes, frame program messages with
:class:`~drivers.sim.scpi.MessageFramer` (so binary blocks survive), hand them
to the simulator and write the replies back, applying injected faults.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import threading
import time
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drivers.sim.faults import Fault, FaultSpec
from drivers.sim.scpi import MessageFramer, Reply, ScpiError, ieee_block

if TYPE_CHECKING:
    from drivers.sim.base import SimInstrument

log = logging.getLogger(__name__)


def encode_reply(reply: Reply, terminator: bytes) -> bytes:
    if reply is None:
        return b""
    if isinstance(reply, bytes):
        return ieee_block(reply) + terminator
    return reply.encode("latin-1") + terminator


def garble(payload: bytes, terminator: bytes) -> bytes:
    """Corrupt a reply but keep its terminator, as line noise would."""
    body = payload[: -len(terminator)] if payload.endswith(terminator) else payload
    junk = bytes(random.choice(b"\x80\x81\xfe\xff?%&") for _ in range(max(3, len(body) // 2)))
    return junk + terminator


def hang_up(sock: socket.socket) -> None:
    """Shut a socket down both ways (the peer sees it at once) and close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    sock.close()


class _Responder:
    """Frames incoming bytes into messages and turns each into the bytes to send."""

    def __init__(self, device: SimInstrument) -> None:
        self.device = device
        self.framer = MessageFramer(device.terminator)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Replies (already faulted) to every message completed by ``data``."""
        try:
            messages = self.framer.feed(data)
        except ScpiError as exc:
            self.device.engine.push_error(exc.code, exc.text)
            return
        for message in messages:
            out = self.respond(message)
            if out:
                yield out

    def respond(self, message: bytes) -> bytes | None:
        device = self.device
        faults = device.faults
        replies = device.process(message)
        if not replies:
            return None
        out = b"".join(encode_reply(r, device.reply_terminator) for r in replies)
        if faults.take(Fault.NO_REPLY) is not None:
            return None
        delay = faults.take(Fault.DELAY)
        if delay is not None:
            time.sleep(delay.seconds)
        if faults.take(Fault.GARBLE) is not None:
            out = garble(out, device.reply_terminator)
        return out


class TcpServer:
    """Serves a simulator over TCP on 127.0.0.1; one thread per connection."""

    def __init__(self, device: SimInstrument, host: str = "127.0.0.1", port: int = 0) -> None:
        self.device = device
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refusing = False
        self._thread: threading.Thread | None = None
        device.faults.listeners.append(self._on_fault)

    @property
    def resource(self) -> str:
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        self._listen()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"sim-{self.device.name}-accept", daemon=True
        )
        self._thread.start()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # The accept thread's select() keeps the socket listening after a bare
            # close() until it returns; shutdown() stops listening at once, so a
            # connection attempt right after a REFUSE fault is refused, not reset.
            hang_up(listener)

    def drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            hang_up(conn)

    def _on_fault(self, spec: FaultSpec | None) -> None:
        if spec is None:  # cleared
            if self._refusing and not self._stop.is_set():
                self._refusing = False
                self._listen()
            return
        if spec.kind is Fault.DROP:
            self.device.faults.take(Fault.DROP)
            self.drop_connections()
        elif spec.kind is Fault.REFUSE and not self._refusing:
            self._refusing = True
            self._close_listener()
            self.drop_connections()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                conn, _ = listener.accept()
            except (OSError, ValueError):
                continue  # listener closed under us (refuse fault or stop)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(
                target=self._serve, args=(conn,), name=f"sim-{self.device.name}-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        responder = _Responder(self.device)
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    break
                if not data:
                    break
                for out in responder.feed(data):
                    try:
                        conn.sendall(out)
                    except OSError:
                        return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()


class PtyServer:
    """Serves a simulator on a pseudo-terminal (a serial instrument)."""

    def __init__(self, device: SimInstrument) -> None:
        self.device = device
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: a plain byte pipe
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unplugged_until = 0.0
        device.faults.listeners.append(self._on_fault)

    @property
    def resource(self) -> str:
        return f"ASRL{self.path}::INSTR"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"sim-{self.device.name}-pty", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def _on_fault(self, spec: FaultSpec | None) -> None:
        # A serial line has no connection to drop or refuse: both look like an
        # unplugged cable (no bytes in either direction) for spec.seconds, or
        # until cleared.
        if spec is None:
            self._unplugged_until = 0.0
        elif spec.kind in (Fault.DROP, Fault.REFUSE):
            self.device.faults.take(spec.kind)
            duration = spec.seconds if spec.seconds > 0 else float("inf")
            if spec.kind is Fault.REFUSE:
                duration = float("inf")
            self._unplugged_until = time.monotonic() + duration

    def _loop(self) -> None:
        responder = _Responder(self.device)
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self._master, 1 << 16)
            except OSError:
                return
            if time.monotonic() < self._unplugged_until:
                continue  # the bytes fall on the floor
            for out in responder.feed(data):
                if time.monotonic() >= self._unplugged_until:
                    os.write(self._master, out)
