"""Bench files: load a TOML description of a bench and validate all of it.

Nothing connects until the whole file has been checked. A mistake raises
:class:`ConfigError` naming the file, the key, the bad value and what was
expected, e.g.::

    configs/sim_bench.toml: instruments.laser1.limits.power_mw: got [0, 50],
    expected a range within the model's [0, 20] mW

Layout (see ``configs/sim_bench.toml`` for a commented example)::

    [bench]                      name, description, seed, clock, clock_speed, ambient_c,
                                 ambient (the simulated room's disturbances, e.g.
                                 ``{ profile = "typical_lab" }``: drivers/sim/environment.py)
    [bench.wiring]               "scope1:1" = "awg1:1"  (simulated signal paths)
    [instruments.NAME]           class, model, resource, timeout_s, ramp_step_s,
                                 limits, ramps, safe_start, sim (simulator options)
    [isaqn]                      the ISAQN network (labctl/isaqn_config.py)
    [entanglement]               the entanglement network (labctl/entangle_config.py)
    [nodes] [channels] [loops] [interlocks] ...   free sections for later stages
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.registry import INSTRUMENT_CLASSES, driver_class, models_for
from drivers.sim.bench import parse_port
from drivers.sim.environment import Environment
from labctl.config_table import SectionError
from labctl.entangle_config import EntanglementConfig, parse_entanglement
from labctl.interlocks import InterlockRule, parse_interlock_section
from labctl.isaqn_config import IsaqnConfig, parse_isaqn
from labctl.loop_config import LoopConfig, parse_loops

#: the simulated bench used when no bench file is given
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: the bench every command uses when none is given: the simulated ISAQN network
DEFAULT_CONFIG = CONFIG_DIR / "isaqn_sim.toml"
#: the foundation bench: one instrument of every class, wired for driver demos
FOUNDATION_CONFIG = CONFIG_DIR / "sim_bench.toml"

#: top-level sections later stages read; kept as plain dictionaries here
FREE_SECTIONS = (
    "nodes",
    "channels",
    "users",
    "loops",
    "interlocks",
    "recording",
    "pipeline",
    "analysis",
    "gui",
)
_BENCH_KEYS = {
    "name",
    "description",
    "seed",
    "clock",
    "clock_speed",
    "ambient_c",
    "ambient",
    "wiring",
}
#: bench.clock: "realtime" (virtual time follows the wall clock, times clock_speed) or
#: "manual" (simulated time moves only as the job reads data: offline, never real time)
CLOCK_MODES = ("realtime", "manual")
_INSTRUMENT_KEYS = {
    "class",
    "model",
    "resource",
    "timeout_s",
    "ramp_step_s",
    "limits",
    "ramps",
    "safe_start",
    "sim",
    "description",
}
#: resource value meaning "start this instrument's simulator and use its address"
SIM_RESOURCE = "sim"


class ConfigError(ValueError):
    """A bench file is wrong; the message says where and how."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


@dataclass(frozen=True)
class InstrumentConfig:
    name: str
    instrument_class: str
    model: str
    resource: str
    timeout_s: float = 2.0
    ramp_step_s: float = 0.05
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    ramps: dict[str, float] = field(default_factory=dict)
    safe_start: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def simulated(self) -> bool:
        return self.resource == SIM_RESOURCE


@dataclass(frozen=True)
class BenchConfig:
    path: Path
    name: str
    description: str
    instruments: dict[str, InstrumentConfig]
    seed: int = 0
    clock_speed: float = 1.0
    clock: str = "realtime"
    ambient_c: float = 22.0
    #: the simulated room's disturbance model (``[bench] ambient``), None: a constant room
    ambient: dict[str, Any] | None = None
    wiring: dict[str, str] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    isaqn: IsaqnConfig | None = None
    entanglement: EntanglementConfig | None = None
    loops: tuple[LoopConfig, ...] = ()
    interlocks: tuple[InterlockRule, ...] = ()

    def by_class(self, instrument_class: str) -> list[InstrumentConfig]:
        return [i for i in self.instruments.values() if i.instrument_class == instrument_class]


# ---------------------------------------------------------------------------
class _Checker:
    """Small typed accessors that raise ConfigError with file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(self.path, key, f"got {value!r}, expected {expected}")

    def table(self, data: Mapping[str, Any], key: str, *, required: bool = False) -> dict:
        value = _lookup(data, key)
        if value is None:
            if required:
                raise ConfigError(self.path, key, "missing; expected a table")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "a table")
        return value

    def string(self, data: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
        value = _lookup(data, key)
        if value is None:
            if default is None:
                raise ConfigError(self.path, key, "missing; expected a string")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, "a non-empty string")
        return value

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        *,
        default: float,
        positive: bool = False,
    ) -> float:
        value = _lookup(data, key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(key, value, "a number")
        if positive and value <= 0:
            raise self.fail(key, value, "a number > 0")
        return float(value)

    def unknown_keys(self, data: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                raise ConfigError(
                    self.path,
                    f"{prefix}.{key}" if prefix else key,
                    f"unknown key; expected one of {', '.join(sorted(allowed))}",
                )


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    return data.get(dotted.rsplit(".", 1)[-1])


def load_bench(path: str | Path | None = None) -> BenchConfig:
    """Load and validate a bench file (the shipped simulated bench if ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(path, "", "no such bench file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text: {exc}") from None
    return parse_bench(data, path)


def parse_bench(data: Mapping[str, Any], path: Path | str = "<bench>") -> BenchConfig:
    """Validate an already-parsed bench mapping."""
    path = Path(path)
    check = _Checker(path)
    check.unknown_keys(data, "", {"bench", "instruments", "isaqn", "entanglement", *FREE_SECTIONS})
    bench = check.table(data, "bench", required=True)
    check.unknown_keys(bench, "bench", _BENCH_KEYS)
    name = check.string(bench, "bench.name")
    seed = check.number(bench, "bench.seed", default=0)
    if not float(seed).is_integer():
        raise check.fail("bench.seed", seed, "an integer")
    instruments_table = check.table(data, "instruments", required=True)
    if not instruments_table:
        raise ConfigError(path, "instruments", "empty; expected at least one instrument")
    instruments = {
        iname: _parse_instrument(check, iname, table) for iname, table in instruments_table.items()
    }
    isaqn = entanglement = None
    classes = {n: i.instrument_class for n, i in instruments.items()}
    models = {n: i.model for n, i in instruments.items()}
    try:
        if "isaqn" in data:
            isaqn = parse_isaqn(data["isaqn"], classes)
        if "entanglement" in data:
            entanglement = parse_entanglement(data["entanglement"], classes, models)
    except SectionError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None
    if isaqn is not None and entanglement is not None:
        raise ConfigError(path, "entanglement", "a bench file holds [isaqn] or [entanglement]")
    if entanglement is not None:
        _check_entanglement_limits(path, entanglement, instruments)
    elements = {isaqn.icr} if isaqn is not None and isaqn.sim is not None else set()
    if entanglement is not None and entanglement.sim is not None:
        elements.add(entanglement.source)
    wiring = check.table(bench, "bench.wiring")
    for dest, src in wiring.items():
        for role, port in (("destination", dest), ("source", src)):
            key = f"bench.wiring.{dest}"
            if not isinstance(port, str):
                raise check.fail(key, port, 'a port string "NAME:CHANNEL"')
            try:
                iname, _ = parse_port(port)
            except ValueError:
                raise check.fail(key, port, f'a {role} port "NAME:CHANNEL"') from None
            if iname not in instruments and not (role == "source" and iname in elements):
                known = ", ".join([*instruments, *sorted(elements)])
                raise check.fail(key, port, f"a {role} on a declared instrument ({known})")
    clock = check.string(bench, "bench.clock", default="realtime")
    if clock not in CLOCK_MODES:
        raise check.fail("bench.clock", clock, " or ".join(f'"{m}"' for m in CLOCK_MODES))
    sections = {key: data[key] for key in FREE_SECTIONS if key in data}
    for key, value in sections.items():
        if not isinstance(value, dict | list):
            raise check.fail(key, value, "a table or an array of tables")
    ambient_c = check.number(bench, "bench.ambient_c", default=22.0)
    ambient = check.table(bench, "bench.ambient") if "ambient" in bench else None
    if ambient is not None:
        try:
            Environment.from_options(ambient, mean_c=ambient_c)
        except ValueError as exc:
            raise ConfigError(path, "bench.ambient", str(exc)) from None
    limits = {n: i.limits for n, i in instruments.items()}
    try:
        loops = parse_loops(data["loops"], classes, models, limits) if "loops" in data else ()
        interlocks = (
            parse_interlock_section(data["interlocks"], models) if "interlocks" in data else ()
        )
    except SectionError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None
    return BenchConfig(
        path=path,
        name=name,
        description=check.string(bench, "bench.description", default=name),
        instruments=instruments,
        seed=int(seed),
        clock_speed=check.number(bench, "bench.clock_speed", default=1.0, positive=True),
        clock=clock,
        ambient_c=ambient_c,
        ambient=ambient,
        wiring=dict(wiring),
        sections=sections,
        raw=dict(data),
        isaqn=isaqn,
        entanglement=entanglement,
        loops=loops,
        interlocks=interlocks,
    )


def _check_entanglement_limits(
    path: Path, ent: EntanglementConfig, instruments: Mapping[str, InstrumentConfig]
) -> None:
    """Pump settings and the ring temperature must lie within their instruments' limits."""
    wanted = [
        (f"entanglement.pumps[{k}].{key}", pump.laser, key, value)
        for k, pump in enumerate(ent.pumps)
        for key, value in (("wavelength_nm", pump.wavelength_nm), ("power_mw", pump.power_mw))
    ]
    wanted.append(
        ("entanglement.ring_temperature_c", ent.tec, "setpoint_c", ent.ring_temperature_c)
    )
    for key, name, setting, value in wanted:
        limits = instruments[name].limits.get(setting)
        if limits is not None and not limits[0] <= value <= limits[1]:
            raise ConfigError(
                path, key, f"got {value:g}, outside {name}'s limits.{setting} {list(limits)}"
            )


def _parse_instrument(check: _Checker, name: str, table: Any) -> InstrumentConfig:
    prefix = f"instruments.{name}"
    if not isinstance(table, dict):
        raise check.fail(prefix, table, "a table")
    check.unknown_keys(table, prefix, _INSTRUMENT_KEYS)
    iclass = check.string(table, f"{prefix}.class")
    if iclass not in INSTRUMENT_CLASSES:
        raise check.fail(f"{prefix}.class", iclass, f"one of {', '.join(INSTRUMENT_CLASSES)}")
    model = check.string(table, f"{prefix}.model")
    if model not in models_for(iclass):
        raise check.fail(
            f"{prefix}.model", model, f"a {iclass} model: {', '.join(models_for(iclass))}"
        )
    driver = driver_class(model)
    settings = driver.settings()
    resource = check.string(table, f"{prefix}.resource")

    limits: dict[str, tuple[float, float]] = {}
    for key, value in check.table(table, f"{prefix}.limits").items():
        lkey = f"{prefix}.limits.{key}"
        setting = settings.get(key)
        if setting is None or setting.kind not in (float, int):
            numeric = [n for n, s in settings.items() if s.kind in (float, int) and s.writable]
            raise check.fail(lkey, key, f"a numeric setting of {model}: {', '.join(numeric)}")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise check.fail(lkey, value, f"[min, max] in {setting.units}")
        low, high = float(value[0]), float(value[1])
        if not low <= high:
            raise check.fail(lkey, value, "min <= max")
        model_range = setting.model_range
        if model_range is not None and not (model_range.low <= low and high <= model_range.high):
            raise check.fail(
                lkey, value, f"a range within the model's {model_range} {setting.units}"
            )
        limits[key] = (low, high)

    ramps: dict[str, float] = {}
    for key in check.table(table, f"{prefix}.ramps"):
        rkey = f"{prefix}.ramps.{key}"
        setting = settings.get(key)
        if setting is None or not setting.rampable:
            rampable = [n for n, s in settings.items() if s.rampable]
            raise check.fail(rkey, key, f"a rampable setting of {model}: {', '.join(rampable)}")
        ramps[key] = check.number(table["ramps"], rkey, default=0.0, positive=True)

    timeout_s = check.number(table, f"{prefix}.timeout_s", default=2.0, positive=True)
    ramp_step_s = check.number(table, f"{prefix}.ramp_step_s", default=0.05, positive=True)
    safe_start = check.table(table, f"{prefix}.safe_start")
    _check_values(check, f"{prefix}.safe_start", driver, safe_start, limits)
    return InstrumentConfig(
        name=name,
        instrument_class=iclass,
        model=model,
        resource=resource,
        timeout_s=timeout_s,
        ramp_step_s=ramp_step_s,
        limits=limits,
        ramps=ramps,
        safe_start=dict(safe_start),
        sim=dict(check.table(table, f"{prefix}.sim")),
        description=check.string(table, f"{prefix}.description", default=name),
    )


def _check_values(
    check: _Checker,
    prefix: str,
    driver: type,
    values: Mapping[str, Any],
    limits: Mapping[str, tuple[float, float]],
) -> None:
    """Check start values against setting type, channels, model range and limits."""
    settings = driver.settings()
    for key, value in values.items():
        vkey = f"{prefix}.{key}"
        name, _, ch = key.partition(".")
        setting = settings.get(name)
        if setting is None or not setting.writable:
            writable = [n for n, s in settings.items() if s.writable]
            raise check.fail(vkey, key, f"a writable setting: {', '.join(writable)}")
        if ch:
            if setting.channels is None or not ch.isdigit() or int(ch) not in setting.channels:
                raise check.fail(vkey, key, f"{name}.<channel> with channel in {setting.channels}")
        try:
            coerced = setting.coerce(value)
        except (TypeError, ValueError) as exc:
            raise check.fail(vkey, value, str(exc)) from None
        if setting.kind in (float, int) and setting.choices is None:
            low, high = limits.get(
                name,
                (setting.model_range.low, setting.model_range.high)
                if setting.model_range is not None
                else (-math.inf, math.inf),
            )
            if not low <= coerced <= high:
                raise check.fail(vkey, value, f"a value within [{low:g}, {high:g}] {setting.units}")
