"""ID Quantique ID1000 Time Controller: SCPI control plus a binary time-tag stream.

Modelled on the ID1000/ID900 Time Controller command names (IDQ's Python
examples): ``INPU<n>:ENAB ON|OFF``, ``INPU<n>:THRE <V>``, ``DELA<n>:VALU <ps>``,
``INPU<n>:COUN?`` with ``INPU<n>:COUN:INTE <ms>``, ``DEVI:RES:BWID?`` and
``RAW<n>:SEND ON|OFF`` / ``RAW<n>:ERR?``. Time values come back with the
time-base unit ``TB`` (1 TB = 1 ps) appended (``1500TB``), which the driver
strips.

Deviations from the real instrument (our simulator is the reference):

* Control link: the real instrument speaks ZeroMQ REQ/REP on TCP 5555 (one
  reply per command, possibly empty). Ours is a raw TCP SCPI socket
  (pyvisa ``TCPIP::host::port::SOCKET``, ``\\n`` terminated) with the same
  command names; setters have no reply.
* Errors: the real instrument answers a bad command with a ``SCPI_ERR_...``
  string and has no error queue. Our simulator answers a failing *query*
  that way too, and it also keeps a ``SYST:ERR?`` queue. The driver checks
  that queue after every write, the SCPI way. When a query is answered
  ``SCPI_ERR_...`` it drains the queue and raises
  :class:`~drivers.errors.InstrumentCommandError` with the queued code and
  text.
* Data: the real instrument streams each input on its own port, and IDQ's
  DataLink service turns that into per-channel uint64 files or streams.
  Ours merges all inputs into one TCP data socket on the same host. Its port
  comes from ``DEVI:DATA:PORT?`` (our extension) unless ``data_port`` is
  given. The frame format below is ours.

Data frame format, version 1 (all fields little-endian)::

    offset  size  field
    0       4     magic b"TTAG"
    4       2     version = 1
    6       2     counter_bits B, 1..56: width of the wrapping timestamp counter
    8       4     n_records
    12      4     flags: bit 0 = events were lost (buffer overflow) before this frame
    16      8     horizon: uint64 bins since the tagger's time origin; every
                  event earlier than this has been sent in this or an earlier frame
    24      8*n   records, uint64 each: code = bits 63..56, payload = bits 55..0

    code 1..4   an event on that input; payload = timestamp counter in bins,
                modulo 2**B (payload < 2**B)
    code 0xFF   WRAP: the counter wrapped <payload> times since the previous record
    code 0xFE   LOST: <payload> events were lost (on-board buffer overflow)
    other       protocol error

A bin lasts ``DEVI:RES:BWID?`` ps. The absolute time of an event, in bins,
is ``wraps * 2**B + counter``, where ``wraps`` sums the WRAP payloads since
the stream began. The tagger sends a WRAP record before the first event of
every new wrap period (PicoQuant-style overflow records), so the driver
never guesses and clock jumps of any length unwrap exactly. A new stream
(``RAW:SEND ON``) or a new data connection starts counting at zero: its
first WRAP record carries all wraps since the time origin. The driver
keeps ``wraps`` across frames and batches and returns int64 ps
(``bins * bin width``), checked to be monotonic. A new data connection
first receives one frame without records, which confirms that the tagger
has registered it.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from typing import Any

import numpy as np

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentTimeout,
    ProtocolError,
)
from drivers.settings import Setting
from drivers.tdc import TagBatch, TimeTagger

FRAME_MAGIC = b"TTAG"
FRAME_VERSION = 1
FRAME_HEADER = struct.Struct("<4sHHIIQ")
FLAG_OVERFLOW = 1
CODE_WRAP = 0xFF
CODE_LOST = 0xFE
MAX_RECORDS_PER_FRAME = 1 << 24
PAYLOAD_MASK = np.uint64((1 << 56) - 1)
_CHANNELS = (1, 2, 3, 4)
_TCPIP_HOST = re.compile(r"^TCPIP\d*::([^:]+)::", re.IGNORECASE)


def _strip_unit(unit: str, kind: type) -> Any:
    def parse(reply: str) -> Any:
        text = reply.strip()
        if text.upper().endswith(unit):
            text = text[: -len(unit)]
        return kind(float(text)) if kind is int else float(text)

    return parse


class IDQID1000(TimeTagger):
    """ID Quantique ID1000 Time Controller (4 inputs), control and time-tag stream.

    Parameters beyond :class:`~drivers.instrument.Instrument`'s:

    data_port:
        TCP port of the data socket; ``None`` (default) asks the instrument
        (``DEVI:DATA:PORT?``). The data socket is on the control link's host.
    """

    model = "idq_id1000"
    modelled_on = "ID Quantique ID1000 Time Controller (SCPI names; raw TCP, not ZeroMQ)"
    read_termination = "\n"
    write_termination = "\n"
    error_query = "SYST:ERR?"
    channels = _CHANNELS

    enabled = Setting(
        set="INPU{ch}:ENAB {value}",
        get="INPU{ch}:ENAB?",
        kind=bool,
        choices={True: "ON", False: "OFF"},
        channels=_CHANNELS,
        units="",
        doc="Input enabled: its events are counted and streamed.",
    )
    threshold_v = Setting(
        set="INPU{ch}:THRE {value}V",
        get="INPU{ch}:THRE?",
        parse=_strip_unit("V", float),
        channels=_CHANNELS,
        units="V",
        model_range=(-2.0, 2.0),
        fmt=".4f",
        doc="Discriminator threshold of the input (sent with an explicit V unit).",
    )
    delay_ps = Setting(
        set="DELA{ch}:VALU {value}",
        get="DELA{ch}:VALU?",
        kind=int,
        parse=_strip_unit("TB", int),
        channels=_CHANNELS,
        units="ps",
        model_range=(0, 100_000_000),
        doc="Delay added to the input's timestamps (reply in TB = ps).",
    )
    bin_width_ps = Setting(
        get="DEVI:RES:BWID?",
        kind=int,
        parse=_strip_unit("TB", int),
        units="ps",
        doc="Width of one timestamp bin.",
    )
    counts = Setting(
        get="INPU{ch}:COUN?",
        kind=int,
        channels=_CHANNELS,
        units="counts",
        doc="Events counted on the input in the last completed integration window.",
    )
    counter_window_ms = Setting(
        set="INPU{ch}:COUN:INTE {value}",
        get="INPU{ch}:COUN:INTE?",
        kind=int,
        channels=_CHANNELS,
        units="ms",
        model_range=(1, 1_000_000),
        doc="Integration window of the input counter (a new window restarts it).",
    )
    streaming = Setting(
        get="RAW:SEND?",
        kind=bool,
        choices={True: "ON", False: "OFF"},
        units="",
        doc="Time tags are being streamed (RAW:SEND, switched by start/stop_stream).",
    )
    lost_events = Setting(
        get="RAW:ERR?",
        kind=int,
        units="events",
        doc="Events lost by the tagger since the last clear (buffer overflow).",
    )

    def __init__(self, name: str, resource: str, *, data_port: int | None = None, **kwargs: Any):
        super().__init__(name, resource, **kwargs)
        match = _TCPIP_HOST.match(resource)
        if match is None:
            raise ValueError(f"{name}: the ID1000 is a LAN instrument, not {resource!r}")
        self.data_host = match.group(1)
        self.data_port = data_port
        self._data_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._rx = bytearray()
        self._reset_stream_state(bin_width_ps=1)

    def _reset_stream_state(self, *, bin_width_ps: int) -> None:
        self._bin_ps = bin_width_ps
        self._counter_bits: int | None = None
        self._wraps = 0
        self._last_ps = -1
        self._horizon_bins = 0
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._lost = 0
        self._overflow = False
        self._frames_seen = 0

    # -- errors ------------------------------------------------------------------
    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Query; a ``SCPI_ERR_...`` answer raises InstrumentCommandError with the queued text."""
        reply = super().query(command, timeout_s=timeout_s)
        if reply.strip().startswith("SCPI_ERR"):
            errors = self._transact(command, self.read_errors)
            code, text = errors[0] if errors else (0, reply.strip())
            raise InstrumentCommandError(
                f"instrument error {code}: {text} ({reply.strip()})",
                instrument=self.name,
                command=command,
                code=code,
            )
        return reply

    # -- counters ------------------------------------------------------------------
    def count_rate_hz(self, channel: int) -> float:
        """Counts of the last integration window divided by the window length."""
        return int(self.get("counts", channel)) / (
            int(self.get("counter_window_ms", channel)) * 1e-3
        )

    # -- stream control ------------------------------------------------------------
    @property
    def is_streaming(self) -> bool:
        return self._sock is not None

    def start_stream(self) -> None:
        """Connect the data socket, wait for its first frame, then ``RAW:SEND ON``.

        The stream is stopped first, so no frame of an earlier stream can
        reach the new connection; the new stream's timestamps are unwrapped
        from zero wraps.
        """
        self.write("RAW:SEND OFF")
        bin_width_ps = int(self.get("bin_width_ps"))
        if bin_width_ps < 1:
            raise ProtocolError(
                f"bin width {bin_width_ps} ps", instrument=self.name, command="DEVI:RES:BWID?"
            )
        port = self.data_port if self.data_port is not None else int(self.query("DEVI:DATA:PORT?"))
        with self._data_lock:
            self._close_data()
            try:
                sock = socket.create_connection((self.data_host, port), timeout=self.timeout_s)
            except OSError as exc:
                raise InstrumentDisconnected(
                    f"data port {self.data_host}:{port} refused: {exc}",
                    instrument=self.name,
                    command="<data connect>",
                ) from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._rx = bytearray()
            self._reset_stream_state(bin_width_ps=bin_width_ps)
            deadline = time.monotonic() + self.timeout_s
            while self._frames_seen == 0:  # the greeting frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._close_data()
                    raise InstrumentTimeout(
                        "no greeting frame on the data port",
                        instrument=self.name,
                        command="<data connect>",
                    )
                self._receive(remaining)
                self._decode_frames()
            self._reset_stream_state(bin_width_ps=bin_width_ps)
        self.write("RAW:SEND ON")

    def stop_stream(self) -> None:
        """``RAW:SEND OFF`` and close the data socket (tags not yet read are discarded)."""
        try:
            self.write("RAW:SEND OFF")
        finally:
            with self._data_lock:
                self._close_data()

    def close(self, *, safe: bool = True) -> None:
        super().close(safe=safe)
        with self._data_lock:
            self._close_data()

    # -- reading -------------------------------------------------------------------
    def read_tags(self, max_wait_s: float, *, until_ps: int | None = None) -> TagBatch:
        with self._data_lock:
            if self._sock is None:
                raise InstrumentDisconnected(
                    "no time-tag stream: call start_stream()", instrument=self.name
                )
            deadline = time.monotonic() + max_wait_s
            frames_before = self._frames_seen
            while True:
                self._decode_frames()
                if until_ps is None:
                    if self._frames_seen > frames_before:
                        while self._receive(0.0):  # and whatever else is already here
                            self._decode_frames()
                        break
                elif self._horizon_bins * self._bin_ps >= until_ps:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if until_ps is None:
                        break
                    raise InstrumentTimeout(
                        f"time tags up to {until_ps} ps not complete within {max_wait_s:g} s "
                        f"(have {self._horizon_bins * self._bin_ps} ps)",
                        instrument=self.name,
                        command="<data>",
                    )
                self._receive(remaining)
            return self._take_batch()

    def _take_batch(self) -> TagBatch:
        if self._parts:
            channel = np.concatenate([c for c, _ in self._parts])
            timestamp_ps = np.concatenate([t for _, t in self._parts])
        else:
            channel = np.zeros(0, dtype=np.uint8)
            timestamp_ps = np.zeros(0, dtype=np.int64)
        batch = TagBatch(
            channel=channel,
            timestamp_ps=timestamp_ps,
            lost_events=self._lost,
            overflow=self._overflow,
            horizon_ps=self._horizon_bins * self._bin_ps,
        )
        self._parts, self._lost, self._overflow = [], 0, False
        return batch

    def _receive(self, timeout_s: float) -> bool:
        """Append what arrives within ``timeout_s`` to the buffer; False if nothing did."""
        sock = self._sock
        if sock is None:
            raise InstrumentDisconnected("data socket closed", instrument=self.name)
        try:
            sock.settimeout(timeout_s if timeout_s > 0 else 0.0)
            data = sock.recv(1 << 20)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as exc:
            self._close_data()
            raise InstrumentDisconnected(
                f"data connection lost: {exc.strerror or exc}",
                instrument=self.name,
                command="<data>",
            ) from exc
        if not data:
            self._close_data()
            raise InstrumentDisconnected(
                "data connection closed by the instrument", instrument=self.name, command="<data>"
            )
        self._rx += data
        return True

    def _protocol_error(self, message: str) -> ProtocolError:
        self._close_data()  # a binary stream cannot be resynchronised: restart it
        return ProtocolError(message, instrument=self.name, command="<data>")

    def _decode_frames(self) -> None:
        """Decode every complete frame in the receive buffer."""
        rx = self._rx
        while len(rx) >= FRAME_HEADER.size:
            magic, version, bits, n_records, flags, horizon = FRAME_HEADER.unpack_from(rx, 0)
            if magic != FRAME_MAGIC:
                raise self._protocol_error(f"bad frame magic {bytes(magic)!r}")
            if version != FRAME_VERSION:
                raise self._protocol_error(f"unsupported frame version {version}")
            if not 1 <= bits <= 56 or n_records > MAX_RECORDS_PER_FRAME:
                raise self._protocol_error(f"bad frame header (bits {bits}, n {n_records})")
            if self._counter_bits is None:
                self._counter_bits = bits
            elif bits != self._counter_bits:
                raise self._protocol_error("counter width changed within a stream")
            size = FRAME_HEADER.size + 8 * n_records
            if len(rx) < size:
                return
            words = np.frombuffer(bytes(rx[FRAME_HEADER.size : size]), dtype="<u8")
            del rx[:size]
            self._decode_records(words, bits)
            self._overflow |= bool(flags & FLAG_OVERFLOW)
            self._horizon_bins = max(self._horizon_bins, int(horizon))
            self._frames_seen += 1

    def _decode_records(self, words: np.ndarray, bits: int) -> None:
        if words.size == 0:
            return
        codes = (words >> np.uint64(56)).astype(np.uint8)
        payload = words & PAYLOAD_MASK
        is_wrap = codes == CODE_WRAP
        is_lost = codes == CODE_LOST
        is_event = ~(is_wrap | is_lost)
        if not np.all(np.isin(codes[is_event], self.channels)):
            bad = sorted(set(codes[is_event].tolist()) - set(self.channels))
            raise self._protocol_error(f"unknown record codes {bad}")
        counters = payload[is_event]
        if counters.size and int(counters.max()) >> bits:
            raise self._protocol_error("timestamp counter wider than the frame's counter width")
        wraps = self._wraps + np.cumsum(np.where(is_wrap, payload, 0).astype(np.int64))
        bins = (wraps[is_event] << bits) + counters.astype(np.int64)
        timestamp_ps = bins * self._bin_ps
        if timestamp_ps.size and (
            timestamp_ps[0] < self._last_ps or np.any(np.diff(timestamp_ps) < 0)
        ):
            raise self._protocol_error("time tags out of order (a WRAP record was lost?)")
        self._wraps = int(wraps[-1])
        self._lost += int(payload[is_lost].sum())
        if timestamp_ps.size:
            self._last_ps = int(timestamp_ps[-1])
            self._parts.append((codes[is_event], timestamp_ps))

    def _close_data(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
