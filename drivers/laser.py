"""Capability base for tunable CW lasers.

Callers use only what is declared here; a second laser model implements the
same settings with its own commands and slots in without touching them.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.instrument import Instrument


class TunableLaser(Instrument):
    """A tunable CW laser: emission, wavelength in nm, power in mW."""

    instrument_class = "laser"
    #: settings every laser model declares (checked by the driver meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "emission",
        "wavelength_nm",
        "power_mw",
        "measured_power_mw",
    )

    def emission_on(self) -> None:
        self.set("emission", True)

    def emission_off(self) -> None:
        self.set("emission", False)

    def safe_state(self) -> None:
        """Emission off. Nothing is ramped: switching the diode off is the safe move."""
        self.set("emission", False)
