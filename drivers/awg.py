"""Capability base for arbitrary waveform generators.

Callers use only what is declared here: the standard settings below (per
channel), :meth:`ArbitraryWaveformGenerator.upload_arb` /
:meth:`~ArbitraryWaveformGenerator.select_arb` and the output switches. A
second AWG model declares the same settings with its own commands and
implements :meth:`~ArbitraryWaveformGenerator._write_arb` for its upload
protocol; everything a caller can get wrong (channel, name, length, sample
values, sample rate) is checked here, before a byte is sent.
"""

from __future__ import annotations

import re
from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import numpy as np

from drivers.errors import LimitViolation
from drivers.instrument import Instrument


class ArbitraryWaveformGenerator(Instrument, metaclass=ABCMeta):
    """A multi-channel function / arbitrary waveform generator.

    Samples are handed over normalised: ``+1.0`` is the top of the output
    range (``offset_v + amplitude_vpp / 2``) and ``-1.0`` the bottom.
    """

    instrument_class = "awg"
    #: settings every AWG model declares, all per channel (checked by the meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "function",
        "amplitude_vpp",
        "offset_v",
        "output",
        "arb_sample_rate_hz",
        "arb_name",
    )
    #: output channel numbers of the model
    channels: ClassVar[tuple[int, ...]] = (1,)
    #: shortest and longest arbitrary waveform the model stores, in points
    min_arb_points: ClassVar[int] = 8
    max_arb_points: ClassVar[int] = 65536
    #: rule for arbitrary-waveform names, and its wording for error messages
    arb_name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")
    arb_name_rule: ClassVar[str] = "1-12 characters: a letter, then letters, digits or underscores"

    # -- validation --------------------------------------------------------------
    def validate(self, name: str, value: Any, channel: int | None = None) -> Any:
        """As :meth:`Instrument.validate`, plus the model's arb-name rule for ``arb_name``."""
        value = super().validate(name, value, channel)
        if name == "arb_name":
            self.check_arb_name(str(value))
        return value

    def check_arb_name(self, name: str) -> str:
        if not self.arb_name_pattern.fullmatch(name):
            raise LimitViolation(
                instrument=self.name, setting="arb_name", value=name, allowed=self.arb_name_rule
            )
        return name

    def check_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or channel not in self.channels:
            raise LimitViolation(
                instrument=self.name,
                setting="channel",
                value=channel,
                allowed=f"channels {list(self.channels)}",
            )
        return channel

    def check_arb_samples(self, samples: np.ndarray) -> np.ndarray:
        """Normalised samples as float64, or LimitViolation (length, finiteness, -1..1)."""
        data = np.asarray(samples)
        if data.ndim != 1 or data.dtype.kind not in "fiu":
            raise LimitViolation(
                instrument=self.name,
                setting="arb samples",
                value=f"array of shape {data.shape} dtype {data.dtype}",
                allowed="a one-dimensional array of real numbers",
            )
        n = data.size
        if not self.min_arb_points <= n <= self.max_arb_points:
            raise LimitViolation(
                instrument=self.name,
                setting="arb length",
                value=n,
                allowed=f"[{self.min_arb_points}, {self.max_arb_points}] points",
            )
        data = data.astype(np.float64)
        bad = ~np.isfinite(data) | (np.abs(data) > 1.0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise LimitViolation(
                instrument=self.name,
                setting="arb samples",
                value=f"sample {first} = {data[first]!r}",
                allowed="finite values in [-1, 1] (normalised to the amplitude)",
            )
        return data

    # -- arbitrary waveforms -----------------------------------------------------
    def upload_arb(
        self, channel: int, name: str, samples: np.ndarray, sample_rate_hz: float
    ) -> None:
        """Load ``samples`` as arb ``name`` on ``channel``, select it and set its sample rate.

        The output state is not touched: call :meth:`output_on` to play it.
        Everything is validated before the first byte is sent.
        """
        self.check_channel(channel)
        self.check_arb_name(name)
        data = self.check_arb_samples(samples)
        rate = self.validate("arb_sample_rate_hz", sample_rate_hz, channel)
        with self._lock:  # one instrument transaction group: no other thread in between
            self._write_arb(channel, name, data)
            self.select_arb(channel, name)
            self.set("arb_sample_rate_hz", rate, channel)

    @abstractmethod
    def _write_arb(self, channel: int, name: str, samples: np.ndarray) -> None:
        """Model-specific upload of validated normalised float64 ``samples``."""

    def select_arb(self, channel: int, name: str) -> None:
        """Play the stored arb ``name`` on ``channel`` (function ARB)."""
        self.check_channel(channel)
        self.check_arb_name(name)
        with self._lock:
            self.set("arb_name", name, channel)
            self.set("function", "ARB", channel)

    # -- outputs -----------------------------------------------------------------
    def output_on(self, channel: int) -> None:
        self.set("output", True, self.check_channel(channel))

    def output_off(self, channel: int) -> None:
        self.set("output", False, self.check_channel(channel))

    def safe_state(self) -> None:
        """Amplitude ramped down where a ramp is configured, then every output off.

        Without a configured amplitude ramp the outputs are switched off
        directly: that is the safe move for a generator.
        """
        rate = self.ramp_rate("amplitude_vpp")
        allowed = self.allowed_range("amplitude_vpp")
        if rate is not None and allowed is not None:
            for channel in self.channels:
                if self.get("output", channel):
                    self.set("amplitude_vpp", allowed.low, channel)
        for channel in self.channels:
            self.set("output", False, channel)
