"""Keysight (Agilent) M8190A 12 GSa/s two-channel arbitrary waveform generator.

Modelled on the M8190A User's Guide command set (direct modes) over a LAN
socket (port 5025, LF terminated both ways). On the ISAQN bench one M8190A
per node generates the node's I and Q drive (carriers 100-300 MHz, 50 MBd)
or a PZT drive; the output used is the direct DAC output.

How the M8190A differs from the 33500B, and how the driver maps it onto the
:class:`~drivers.awg.ArbitraryWaveformGenerator` capability:

* The sample clock ``:FREQ:RAST`` is common to both channels: the per-channel
  ``arb_sample_rate_hz`` writes the one clock, so setting it on one channel
  sets it on both. 125 MSa/s..12 GSa/s in 12-bit speed mode
  (``:TRAC<n>:DWID WSP``), up to 8 GSa/s while either channel is in 14-bit
  precision mode (``WPR``): ``data_width`` "speed" / "precision".
* Waveforms live in numbered segments (``:TRAC<n>:DEF <id>,<length>``,
  ``:TRAC<n>:DATA <id>,<offset>,<block>``, ``:TRAC<n>:SEL <id>``). An arb
  name is kept as the segment's name (``:TRAC<n>:NAME``): ``upload_arb``
  replaces the segment of that name, or defines the lowest free id, and
  ``select_arb`` / ``arb_name`` select the segment carrying the name. Segment
  lengths must be a whole number of vectors (64 samples in speed mode, 48 in
  precision mode) and at least 5 vectors (320 / 240 samples); the driver
  refuses other lengths before sending anything.
* Samples go as 16-bit words, little-endian int16 blocks (the M8190A's binary
  format), with the DAC value in the upper bits: ``round(x * 2047) << 4`` in
  speed mode, ``round(x * 8191) << 2`` in precision mode; the marker bits
  (0 and 1) are left at 0. Blocks are split at 2**18 vectors per
  ``:TRAC:DATA`` (offsets stay on the vector grid).
* The output relay (``:OUTP<n>:NORM``) and signal generation (``:INIT:IMM<n>``
  / ``:ABOR<n>``, run state ``:STAT:OPER:RUN:COND?``) are separate: so that
  the M8190A behaves like the 33500B wherever a caller uses the capability,
  :meth:`KeysightM8190A.output_on` also starts generation,
  :meth:`KeysightM8190A.upload_arb` stops a running channel (segments cannot
  be redefined while it runs) and restarts it afterwards, and the safe state
  also stops generation.

Limits checked before sending: amplitude 0.35..0.7 V and offset -20..+20 mV
(direct DAC output, single-ended; the differential swing is twice the
amplitude), sample rate as above, segment length as above up to 1.5 GSa
(speed) / 2 GSa (precision) (option 02G), arb names of 1-12 characters
(letter first, then letters, digits, underscores).

From the User's Guide (public excerpts) and Keysight's IQtools: the command
forms, the word format, the little-endian blocks, the granularity and
minimum lengths, the rate ranges, ``0,0`` for an empty ``:TRAC:CAT?`` and the
run-status bits. Inferred, not checked on an instrument: the amplitude and
offset limits of the DAC output (the data sheet as remembered), that
segments cannot be (re)defined while a channel runs (IQtools stops the
channel first, which the driver does too) and the error codes other than
-223 (see :mod:`drivers.sim.keysight_m8190a`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.awg import ArbitraryWaveformGenerator
from drivers.errors import LimitViolation
from drivers.settings import Setting

CHANNELS = (1, 2)
MIN_RATE_HZ = 125e6
MAX_SEGMENT_ID = 512 * 1024  # with option SEQ
#: samples per :TRAC:DATA block: 2**18 vectors
CHUNK_VECTORS = 2**18


@dataclass(frozen=True)
class DataWidth:
    """One direct mode of ``:TRAC<n>:DWID``."""

    wire: str
    bits: int
    vector: int  # segment granularity, samples
    shift: int  # position of the DAC value in the 16-bit word
    max_rate_hz: float
    max_length: int  # longest segment with option 02G

    @property
    def min_length(self) -> int:
        return 5 * self.vector

    @property
    def full_scale(self) -> int:
        """DAC value of a normalised +1.0 (and -full_scale of -1.0)."""
        return 2 ** (self.bits - 1) - 1


DATA_WIDTHS = {
    "speed": DataWidth("WSP", 12, 64, 4, 12e9, 3 * 512 * 1024**2),
    "precision": DataWidth("WPR", 14, 48, 2, 8e9, 2 * 1024**3),
}


def dac_words(samples: np.ndarray, data_width: str) -> np.ndarray:
    """Normalised samples (-1..1) -> the M8190A's int16 words in ``data_width`` mode."""
    width = DATA_WIDTHS[data_width]
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * width.full_scale)
    codes = np.clip(scaled, -width.full_scale, width.full_scale).astype(np.int16)
    return np.left_shift(codes, width.shift).astype(np.int16)


def _unquote(reply: str) -> str:
    return reply.strip().strip('"').strip("'")


class _SegmentName(Setting):
    """``arb_name``: written by selecting the segment that carries the name.

    Its command needs the segment id, which only the instrument knows, so
    :class:`KeysightM8190A` writes and reads it itself (like the Arroyo's
    grouped fields): a plain ``set_command`` would send the name as an id.
    """

    def set_command(self, value: Any, channel: int | None) -> str:
        raise TypeError(f"{self.name} is written by looking up its segment id")


class KeysightM8190A(ArbitraryWaveformGenerator):
    """Keysight M8190A 12 GSa/s (12-bit) / 8 GSa/s (14-bit) two-channel AWG."""

    model = "keysight_m8190a"
    modelled_on = "Keysight (Agilent) M8190A, User's Guide SCPI (direct modes) over LAN socket"
    channels = CHANNELS
    min_arb_points = DATA_WIDTHS["precision"].min_length
    max_arb_points = DATA_WIDTHS["precision"].max_length

    function = Setting(
        set=":FUNC{ch}:MODE {value}",
        get=":FUNC{ch}:MODE?",
        kind=str,
        choices={"ARB": "ARB", "STS": "STS", "STSC": "STSC"},
        channels=CHANNELS,
        units="",
        doc="Function mode: ARB plays the selected segment (STS/STSC: sequencer).",
    )
    amplitude_vpp = Setting(
        set=":VOLT{ch} {value}",
        get=":VOLT{ch}?",
        units="Vpp",
        model_range=(0.35, 0.7),
        channels=CHANNELS,
        rampable=True,
        doc="Single-ended amplitude of the direct DAC output (an arb spans it from -1 to +1).",
    )
    offset_v = Setting(
        set=":VOLT{ch}:OFFS {value}",
        get=":VOLT{ch}:OFFS?",
        units="V",
        model_range=(-0.02, 0.02),
        channels=CHANNELS,
        rampable=True,
        doc="DC offset of the direct DAC output.",
    )
    output = Setting(
        set=":OUTP{ch}:NORM {value}",
        get=":OUTP{ch}:NORM?",
        kind=bool,
        channels=CHANNELS,
        units="",
        doc="Normal output relay of the channel on (True) or off.",
    )
    arb_sample_rate_hz = Setting(
        set=":FREQ:RAST {value}",
        get=":FREQ:RAST?",
        units="Sa/s",
        model_range=(MIN_RATE_HZ, 12e9),
        channels=CHANNELS,
        doc="Sample clock, common to both channels (at most 8 GSa/s in precision mode).",
    )
    arb_name = _SegmentName(
        set=":TRAC{ch}:SEL {value}",
        get=":TRAC{ch}:SEL?",
        kind=str,
        channels=CHANNELS,
        units="",
        doc="Name of the segment the channel plays (its id is selected with TRAC:SEL).",
    )
    selected_segment = Setting(
        set=":TRAC{ch}:SEL {value}",
        get=":TRAC{ch}:SEL?",
        kind=int,
        model_range=(1, MAX_SEGMENT_ID),
        channels=CHANNELS,
        units="",
        doc="Id of the segment the channel plays in ARB mode.",
    )
    data_width = Setting(
        set=":TRAC{ch}:DWID {value}",
        get=":TRAC{ch}:DWID?",
        kind=str,
        choices={name: width.wire for name, width in DATA_WIDTHS.items()},
        channels=CHANNELS,
        units="",
        doc="DAC mode: speed (12 bit, 12 GSa/s, vector 64) or precision (14 bit, 8 GSa/s, 48).",
    )

    def on_connect(self) -> None:
        # fill the caches the coupled checks read, so a refusal sends nothing
        for channel in self.channels:
            self.get("data_width", channel)
            self.get("amplitude_vpp", channel)
            self.get("offset_v", channel)
        self.get("arb_sample_rate_hz", self.channels[0])

    # -- validation ----------------------------------------------------------------
    def validate(self, name: str, value: Any, channel: int | None = None) -> Any:
        """Also refuses a sample rate above what the channels' data widths allow."""
        value = super().validate(name, value, channel)
        if name == "arb_sample_rate_hz":
            limit = self.max_sample_rate_hz()
            if value > limit * (1 + 1e-12):
                raise LimitViolation(
                    instrument=self.name,
                    setting=name,
                    value=value,
                    allowed=f"at most {limit:g} Sa/s with data widths {self._widths()}",
                )
        elif name == "data_width":
            rate = self._known("arb_sample_rate_hz", channel)
            limit = DATA_WIDTHS[value].max_rate_hz
            if rate > limit * (1 + 1e-12):
                raise LimitViolation(
                    instrument=self.name,
                    setting=f"{name} (with arb_sample_rate_hz, channel {channel})",
                    value=value,
                    allowed=f"{value} mode up to {limit:g} Sa/s; the sample rate is {rate:g}",
                )
        return value

    def _known(self, name: str, channel: int | None) -> Any:
        """Last value written or read (read from the instrument if never seen)."""
        cached = self.cache.get((name, channel))
        return cached if cached is not None else self.get(name, channel)

    def _widths(self) -> dict[int, str]:
        return {ch: self._known("data_width", ch) for ch in self.channels}

    def max_sample_rate_hz(self) -> float:
        """Highest sample clock the channels' present data widths allow."""
        return min(DATA_WIDTHS[w].max_rate_hz for w in self._widths().values())

    def check_segment_length(self, channel: int, length: int) -> int:
        """``length`` if it fits the channel's data width, else LimitViolation."""
        width_name = self._known("data_width", self.check_channel(channel))
        width = DATA_WIDTHS[width_name]
        if length % width.vector or not width.min_length <= length <= width.max_length:
            raise LimitViolation(
                instrument=self.name,
                setting=f"arb length (channel {channel}, {width_name} mode)",
                value=length,
                allowed=(
                    f"a multiple of {width.vector} samples in "
                    f"[{width.min_length}, {width.max_length}]"
                ),
            )
        return length

    def check_segment_id(self, segment: int) -> int:
        if isinstance(segment, bool) or not isinstance(segment, int | np.integer):
            raise LimitViolation(
                instrument=self.name, setting="segment id", value=segment, allowed="an integer"
            )
        if not 1 <= segment <= MAX_SEGMENT_ID:
            raise LimitViolation(
                instrument=self.name,
                setting="segment id",
                value=segment,
                allowed=f"[1, {MAX_SEGMENT_ID}]",
            )
        return int(segment)

    # -- settings the instrument stores differently ----------------------------------
    def _write_setting(self, setting: Setting, value: Any, channel: int | None) -> None:
        if setting.name == "arb_name":
            segment = self.segment_of(channel, value)
            if segment is None:
                raise LimitViolation(
                    instrument=self.name,
                    setting="arb_name",
                    value=value,
                    allowed=f"names of the segments on channel {channel}: "
                    f"{sorted(n for n in self.segment_names(channel).values() if n)}",
                )
            self.set("selected_segment", segment, channel)
            self.cache[("arb_name", channel)] = value
            return
        super()._write_setting(setting, value, channel)
        if setting.name == "arb_sample_rate_hz":  # one clock for both channels
            for other in self.channels:
                self.cache[(setting.name, other)] = value

    def get(self, name: str, channel: int | None = None) -> Any:
        """As :meth:`Instrument.get`; ``arb_name`` is the selected segment's name."""
        if name != "arb_name":
            value = super().get(name, channel)
            if name == "arb_sample_rate_hz":
                for other in self.channels:
                    self.cache[(name, other)] = value
            return value
        with self._lock:
            segment = self.get("selected_segment", channel)
            value = self.segment_names(channel).get(segment, "")
            self.cache[(name, channel)] = value
            return value

    # -- segments ----------------------------------------------------------------------
    def segment_catalog(self, channel: int) -> dict[int, int]:
        """Defined segments of ``channel``: id -> length in samples."""
        reply = self.query(f":TRAC{self.check_channel(channel)}:CAT?")
        numbers = [int(float(item)) for item in reply.split(",") if item.strip()]
        pairs = dict(zip(numbers[0::2], numbers[1::2], strict=True))
        return {i: n for i, n in pairs.items() if i != 0}

    def segment_names(self, channel: int) -> dict[int, str]:
        """Defined segments of ``channel``: id -> name ("" when unnamed)."""
        with self._lock:
            return {
                segment: _unquote(self.query(f":TRAC{channel}:NAME? {segment}"))
                for segment in self.segment_catalog(channel)
            }

    def segment_of(self, channel: int, name: str) -> int | None:
        """Id of the segment named ``name`` on ``channel``, or None."""
        found = [i for i, n in self.segment_names(channel).items() if n == name]
        return min(found) if found else None

    def delete_segment(self, channel: int, segment: int) -> None:
        self.check_channel(channel)
        self.write(f":TRAC{channel}:DEL {self.check_segment_id(segment)}")

    def delete_all_segments(self, channel: int) -> None:
        self.write(f":TRAC{self.check_channel(channel)}:DEL:ALL")

    def write_segment(
        self, channel: int, segment: int, samples: np.ndarray, *, name: str | None = None
    ) -> None:
        """Define segment ``segment`` on ``channel`` and fill it with ``samples``.

        The segment must not exist yet and the channel must be stopped; the
        selection, mode and run state are not touched. Everything is validated
        before the first byte is sent.
        """
        self.check_channel(channel)
        self.check_segment_id(segment)
        if name is not None:
            self.check_arb_name(name)
        data = self.check_arb_samples(samples)
        self.check_segment_length(channel, data.size)
        with self._lock:
            self._define_and_fill(channel, segment, data, name)

    def _define_and_fill(
        self, channel: int, segment: int, data: np.ndarray, name: str | None
    ) -> None:
        width_name = self._known("data_width", channel)
        words = dac_words(data, width_name)
        chunk = CHUNK_VECTORS * DATA_WIDTHS[width_name].vector
        self.write(f":TRAC{channel}:DEF {segment},{words.size}")
        for offset in range(0, words.size, chunk):
            self.write_block(
                f":TRAC{channel}:DATA {segment},{offset},",
                words[offset : offset + chunk],
                big_endian=False,
            )
        if name is not None:
            self.write(f':TRAC{channel}:NAME {segment},"{name}"')

    # -- arbitrary waveforms (the capability) ---------------------------------------------
    def upload_arb(
        self, channel: int, name: str, samples: np.ndarray, sample_rate_hz: float
    ) -> None:
        """Load ``samples`` as the segment named ``name``, select it, set the sample clock.

        Lengths must fit the channel's data width (see :meth:`check_segment_length`).
        A running channel is stopped for the upload and restarted afterwards;
        the output relay is not touched. Everything is validated before the
        first byte is sent.
        """
        self.check_channel(channel)
        self.check_arb_name(name)
        data = self.check_arb_samples(samples)
        self.check_segment_length(channel, data.size)
        rate = self.validate("arb_sample_rate_hz", sample_rate_hz, channel)
        with self._lock:
            running = self.is_running(channel)
            if running:
                self.stop(channel)
            super().upload_arb(channel, name, data, rate)
            if running:
                self.start(channel)

    def _write_arb(self, channel: int, name: str, samples: np.ndarray) -> None:
        names = self.segment_names(channel)
        same = sorted(i for i, n in names.items() if n == name)
        for segment in same:
            self.write(f":TRAC{channel}:DEL {segment}")
        segment = same[0] if same else next(i for i in range(1, len(names) + 2) if i not in names)
        self._define_and_fill(channel, segment, samples, name)

    # -- run control and outputs ---------------------------------------------------------------
    def start(self, channel: int) -> None:
        """Start signal generation on ``channel`` (``:INIT:IMM<n>``)."""
        self.write(f":INIT:IMM{self.check_channel(channel)}")

    def stop(self, channel: int) -> None:
        """Stop signal generation on ``channel`` (``:ABOR<n>``)."""
        self.write(f":ABOR{self.check_channel(channel)}")

    def is_running(self, channel: int) -> bool:
        """Signal generation of ``channel`` running (``:STAT:OPER:RUN:COND?`` bit n-1)."""
        bits = int(float(self.query(":STAT:OPER:RUN:COND?")))
        return bool(bits >> (self.check_channel(channel) - 1) & 1)

    def output_on(self, channel: int) -> None:
        """Output relay on and signal generation started (the selected segment plays)."""
        with self._lock:
            super().output_on(channel)
            if not self.is_running(channel):
                self.start(channel)

    def safe_state(self) -> None:
        """As the capability's safe state (amplitude ramp, outputs off), then generation stopped."""
        super().safe_state()
        for channel in self.channels:
            self.stop(channel)
