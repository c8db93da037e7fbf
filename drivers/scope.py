"""Capability base for digitising oscilloscopes.

Callers use only what is declared here: the vertical and horizontal settings
below, :meth:`Oscilloscope.acquire` (one single-shot record of several
channels, returned as :class:`Waveform` objects) and
:meth:`Oscilloscope.overloaded`. A second scope model declares the same
settings with its own commands and implements ``_acquire`` and
``overloaded`` for its protocol.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from drivers.errors import LimitViolation
from drivers.instrument import Instrument


@dataclass(frozen=True)
class Waveform:
    """One channel of one acquisition.

    ``volts = codes * volts_per_code + offset_v`` exactly, so a recorder can
    store the instrument's integer codes and the two scale numbers instead of
    float64 volts. Sample ``i`` was taken at ``t0_s + i * dt_s`` on the
    scope's time axis (``t0_s`` is relative to the trigger point).
    """

    volts: np.ndarray  # float64
    t0_s: float
    dt_s: float
    codes: np.ndarray  # int16, as sent by the instrument
    volts_per_code: float
    offset_v: float

    def __post_init__(self) -> None:
        if self.volts.dtype != np.float64 or self.codes.dtype != np.int16:
            raise TypeError("Waveform needs float64 volts and int16 codes")
        if self.volts.shape != self.codes.shape or self.volts.ndim != 1:
            raise ValueError("volts and codes must be 1-D arrays of the same length")
        if not self.dt_s > 0:
            raise ValueError(f"sample interval must be > 0, got {self.dt_s!r}")

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, *, volts_per_code: float, offset_v: float, t0_s: float, dt_s: float
    ) -> Waveform:
        raw = np.asarray(codes).astype(np.int16, copy=False)
        volts = raw.astype(np.float64) * volts_per_code + offset_v
        return cls(volts, t0_s, dt_s, raw, volts_per_code, offset_v)

    @property
    def n_points(self) -> int:
        return int(self.volts.size)

    @property
    def sample_rate_hz(self) -> float:
        return 1.0 / self.dt_s

    def t_s(self) -> np.ndarray:
        """Time of every sample (float64 seconds, scope time axis)."""
        return self.t0_s + np.arange(self.n_points, dtype=np.float64) * self.dt_s


class Oscilloscope(Instrument, metaclass=ABCMeta):
    """A multi-channel digitising oscilloscope."""

    instrument_class = "scope"
    #: settings every scope model declares (checked by the meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "channel_scale_v_per_div",
        "channel_offset_v",
        "timebase_scale_s_per_div",
        "sample_rate_hz",
        "record_length",
    )
    #: analog input channel numbers of the model
    channels: ClassVar[tuple[int, ...]] = (1,)
    #: vertical divisions spanning the ADC's full scale
    vertical_divisions: ClassVar[int] = 8

    def check_channels(
        self, channels: Sequence[int], what: str = "acquisition channels"
    ) -> tuple[int, ...]:
        """The channels as a tuple, or LimitViolation (empty, repeated or unknown)."""
        wanted = tuple(channels)
        bad = [ch for ch in wanted if isinstance(ch, bool) or ch not in self.channels]
        if not wanted or bad or len(set(wanted)) != len(wanted):
            raise LimitViolation(
                instrument=self.name,
                setting=what,
                value=list(wanted),
                allowed=f"distinct channels among {list(self.channels)}, at least one",
            )
        return wanted

    def acquire(self, channels: Sequence[int]) -> dict[int, Waveform]:
        """Take one single-shot record of ``channels`` together; returns them by channel."""
        wanted = self.check_channels(channels)
        with self._lock:  # digitise and read out as one group: no other thread in between
            return self._acquire(wanted)

    @abstractmethod
    def _acquire(self, channels: tuple[int, ...]) -> dict[int, Waveform]:
        """Model-specific single acquisition of validated channels."""

    @abstractmethod
    def overloaded(self, channel: int) -> bool:
        """True when the channel's input overload protection has tripped."""

    def full_scale_v(self, channel: int) -> float:
        """Peak-to-peak input range of a channel (all vertical divisions)."""
        return self.vertical_divisions * float(self.get("channel_scale_v_per_div", channel))
