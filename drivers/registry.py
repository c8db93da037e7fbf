"""Which driver and which simulator serve each instrument model.

Adding a model is one line here plus its driver and simulator modules; bench
files name models by the keys below. Imports are lazy so that loading a bench
file does not import every driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.instrument import Instrument
    from drivers.sim.base import SimInstrument

#: instrument classes and what they are
INSTRUMENT_CLASSES: dict[str, str] = {
    "laser": "tunable CW laser",
    "awg": "arbitrary waveform generator",
    "scope": "oscilloscope",
    "tdc": "time-to-digital converter / time tagger",
    "tec": "PID temperature controller",
    "wavemeter": "laser wavelength meter",
}

#: model key -> (instrument class, driver "module:Class", simulator "module:Class")
MODELS: dict[str, tuple[str, str, str]] = {
    "santec_tsl570": (
        "laser",
        "drivers.santec:SantecTSL570",
        "drivers.sim.santec:SimSantecTSL570",
    ),
    "keysight_33500b": (
        "awg",
        "drivers.keysight_33500b:Keysight33500B",
        "drivers.sim.keysight_33500b:SimKeysight33500B",
    ),
    "keysight_m8190a": (
        "awg",
        "drivers.keysight_m8190a:KeysightM8190A",
        "drivers.sim.keysight_m8190a:SimKeysightM8190A",
    ),
    "keysight_infiniium": (
        "scope",
        "drivers.keysight_infiniium:KeysightInfiniium",
        "drivers.sim.keysight_infiniium:SimKeysightInfiniium",
    ),
    "idq_id1000": (
        "tdc",
        "drivers.idq_id1000:IDQID1000",
        "drivers.sim.idq_id1000:SimIDQID1000",
    ),
    "arroyo_5300": (
        "tec",
        "drivers.arroyo:Arroyo5300",
        "drivers.sim.arroyo:SimArroyo5300",
    ),
    "bristol_871": (
        "wavemeter",
        "drivers.bristol_871:Bristol871",
        "drivers.sim.bristol_871:SimBristol871",
    ),
}


def _load(target: str) -> type:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def models_for(instrument_class: str) -> list[str]:
    return [m for m, (c, _, _) in MODELS.items() if c == instrument_class]


def driver_class(model: str) -> type[Instrument]:
    try:
        return _load(MODELS[model][1])
    except KeyError:
        raise KeyError(f"unknown instrument model {model!r}; known: {sorted(MODELS)}") from None


def simulator_class(model: str) -> type[SimInstrument]:
    try:
        return _load(MODELS[model][2])
    except KeyError:
        raise KeyError(f"no simulator for model {model!r}; known: {sorted(MODELS)}") from None
