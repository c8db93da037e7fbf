"""Capability base for laser wavelength meters (wavemeters).

Callers (the pump-laser frequency lock of physics.md section 2) use only what is declared
here: :meth:`Wavemeter.measure` returns one whole measurement (frequency, vacuum wavelength,
power, condition flags and the instrument's own measurement counter, so a loop can tell a new
measurement from one it has already seen), and the settings listed in ``required_settings``
read single quantities for panels and ``labctl instruments``. A second wavemeter model
declares the same settings with its own commands and maps its status word onto
:class:`WavemeterCondition`.

No light is never a frequency: :meth:`Wavemeter.measure` raises :class:`WavemeterNoSignal`
and the reading settings (``frequency_hz``, ``wavelength_nm``) return ``None``.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import ClassVar

from drivers.errors import InstrumentError
from drivers.instrument import Instrument

SPEED_OF_LIGHT_M_S = 299_792_458.0


class WavemeterCondition(enum.IntFlag):
    """Condition of one measurement.

    Bit positions follow the Bristol 871A questionable status register (``:STAT:QUES:COND?``
    and the status field of ``:FETCh:ALL?``); other models translate their flags onto these
    names. The 871A manual lists the conditions in this order; the bit values of bits 0, 3,
    4, 5, 9 and 10 are those printed for the same register in Bristol's 671 and Burleigh's
    WA-1100 manuals, and the four conditions those lack (calibration failed, saturated, low
    signal, no signal) take the free bits 1, 6, 7 and 8 in the 871A's listed order.
    """

    NONE = 0
    ALREADY_READ = 1 << 0  #: this measurement was already read (no new one since)
    CALIBRATION_FAILED = 1 << 1
    POWER_OUT_OF_RANGE = 1 << 3
    TEMPERATURE_OUT_OF_RANGE = 1 << 4
    WAVELENGTH_OUT_OF_RANGE = 1 << 5
    SATURATED = 1 << 6  #: detector saturated: the reading is still given
    LOW_SIGNAL = 1 << 7  #: detector signal low: the reading is given but questionable
    NO_SIGNAL = 1 << 8  #: no measurable signal: there is no reading
    PRESSURE_OUT_OF_RANGE = 1 << 9
    HARDWARE = 1 << 10  #: a bit is set in the questionable hardware register


#: conditions under which the measurement holds no reading at all
NO_READING = WavemeterCondition.NO_SIGNAL | WavemeterCondition.WAVELENGTH_OUT_OF_RANGE


class WavemeterNoSignal(InstrumentError):
    """The wavemeter measured no light (laser off, fibre unplugged, power below threshold)."""

    def __init__(
        self,
        message: str,
        *,
        instrument: str,
        command: str | None = None,
        condition: WavemeterCondition = WavemeterCondition.NO_SIGNAL,
    ) -> None:
        self.condition = condition
        super().__init__(message, instrument=instrument, command=command)


@dataclass(frozen=True)
class WavemeterReading:
    """One measurement of the wavemeter.

    ``scan_index`` is the instrument's measurement counter (it grows by one per measurement):
    the measurement's timestamp in the instrument's own time. Two readings with the same
    index are the same measurement, read twice.
    """

    scan_index: int
    frequency_hz: float  #: optical frequency (medium independent)
    wavelength_nm: float  #: vacuum wavelength
    power_mw: float  #: power on the wavemeter's detector
    condition: WavemeterCondition

    def is_newer_than(self, previous: WavemeterReading | None) -> bool:
        """True when this is a later measurement than ``previous`` (or there was none).

        Indices are compared modulo 2**32 (the 871's counter is a 32-bit unsigned integer
        that wraps): a step forward of less than half the range counts as newer.
        """
        if previous is None:
            return True
        step = (self.scan_index - previous.scan_index) % 2**32
        return 0 < step < 2**31

    @property
    def questionable(self) -> bool:
        """The instrument flags the measurement (low signal, saturation, out of range...)."""
        return bool(self.condition & ~WavemeterCondition.ALREADY_READ)


class Wavemeter(Instrument, abc.ABC):
    """A laser wavelength meter: frequency in Hz, vacuum wavelength in nm, power in mW."""

    instrument_class = "wavemeter"
    #: settings every wavemeter model declares (checked by the driver meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "frequency_hz",
        "wavelength_nm",
        "power_mw",
        "averaging",
        "average_count",
    )

    @abc.abstractmethod
    def measure(self, *, fresh: bool = False) -> WavemeterReading:
        """The latest measurement as one consistent record.

        ``fresh=False`` returns at once with the latest completed measurement (possibly one
        already read: compare ``scan_index``); ``fresh=True`` waits for a measurement that
        has not been read yet. Raises :class:`WavemeterNoSignal` when there is no light to
        measure.
        """

    def frequency_hz_now(self) -> float:
        """Frequency of the latest measurement in Hz (raises :class:`WavemeterNoSignal`)."""
        return self.measure().frequency_hz

    def safe_state(self) -> None:
        """Nothing to do: a wavemeter emits no light and drives no output.

        The Bristol 871's optional PID analogue output is not declared by these drivers, so
        nothing here can leave a voltage on it; closing the link changes no setting.
        """
