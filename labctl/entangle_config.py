"""The ``[entanglement]`` section of a bench file: the entanglement network as operated.

Layout (``configs/entanglement_sim.toml`` is a commented example)::

    [entanglement]               tec, ring_temperature_c, reference_tagger, window_ps, bin_ps,
                                 max_delay_ps, interferometer_delay_ps, update_s, scan_steps,
                                 step_s, settle_s, sifting, ec_efficiency, max_clock_offset_s,
                                 max_drift_ppm, source
    [[entanglement.pumps]]       label, laser, wavelength_nm, power_mw
    [entanglement.users.NAME]    interferometer ("AWG:CHANNEL" of its phase shifter),
                                 volts_per_2pi
    [[entanglement.channels]]    label, user, tagger, input
    [entanglement.sim]           the twin's hidden physics (simulated benches only): ring and
                                 detector numbers, defaults of every channel
    [[entanglement.sim.channels]]  label, then any per-channel override
    [entanglement.sim.users.NAME]  rad_per_v, phase_offset_rad, phase_drift ("random_walk",
                                 the default, or "model"), drift_rad2_per_s (random_walk only)
    [entanglement.sim.users.NAME.drift]  phase_drift = "model" only: any field of
                                 models.drift.DriftParams (e.g. thermal_lag_s,
                                 burst_rate_per_hour); the rest keep their defaults. The
                                 air is the bench's room ([bench] ambient), so the model's
                                 own air keys (daily_*, hvac_*, ambient_ou_*) and its
                                 measurement/telemetry noises have no effect on the twin

Channel labels follow physics.md section 2: with pumps at labels p_a and p_b, channels x and y
carry correlated pairs when x + y is 2 p_a, 2 p_b or p_a + p_b. Everything is checked before
anything connects; errors name the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from drivers.registry import driver_class
from drivers.sim.bench import parse_port
from drivers.sim.pairsource import (
    PHASE_DRIFTS,
    ChannelPhysics,
    PairSourcePhysics,
    PumpPhysics,
    UserPhysics,
)
from dsp.entanglement import pair_process
from labctl.config_table import SectionError, Table
from models.drift import DriftParams

Port = tuple[str, int]

#: tagger inputs of the models labctl drives (checked against the channel table)
TAGGER_INPUTS = {"idq_id1000": (1, 2, 3, 4)}


@dataclass(frozen=True)
class PumpConfig:
    label: int
    laser: str
    wavelength_nm: float
    power_mw: float


@dataclass(frozen=True)
class UserConfig:
    name: str
    interferometer: Port | None  #: AWG output driving the interferometer's phase shifter
    volts_per_2pi: float  #: the operator's calibration of that phase shifter


@dataclass(frozen=True)
class ChannelConfig:
    label: int
    user: str
    tagger: str
    input: int


@dataclass(frozen=True)
class LinkConfig:
    """A correlated channel pair between two different users (a row of the network table)."""

    user_a: str
    user_b: str
    channel_a: int  #: label on user_a's side
    channel_b: int
    process: str  #: "degenerate pump P" or "nondegenerate" (dsp.entanglement.pair_process)


@dataclass(frozen=True)
class EntanglementConfig:
    tec: str
    ring_temperature_c: float
    pumps: tuple[PumpConfig, PumpConfig]
    users: tuple[UserConfig, ...]
    channels: tuple[ChannelConfig, ...]
    reference_tagger: str
    window_ps: int
    bin_ps: int
    max_delay_ps: int
    interferometer_delay_ps: float
    update_s: float
    scan_steps: int
    step_s: float
    settle_s: float
    sifting: float
    ec_efficiency: float
    max_clock_offset_s: float
    max_drift_ppm: float
    source: str
    sim: PairSourcePhysics | None = None

    @property
    def taggers(self) -> tuple[str, ...]:
        """The reference tagger first, then the other (at most two)."""
        others = sorted({c.tagger for c in self.channels} - {self.reference_tagger})
        return (self.reference_tagger, *others)

    @property
    def pump_labels(self) -> tuple[int, int]:
        return (self.pumps[0].label, self.pumps[1].label)

    def channel(self, label: int) -> ChannelConfig:
        for c in self.channels:
            if c.label == label:
                return c
        raise KeyError(label)

    def links(self) -> tuple[LinkConfig, ...]:
        """Every correlated channel pair shared by two users, ordered by user then label."""
        order = {u.name: k for k, u in enumerate(self.users)}
        out = []
        chans = sorted(self.channels, key=lambda c: (order[c.user], c.label))
        for i, a in enumerate(chans):
            for b in chans[i + 1 :]:
                if a.user == b.user:
                    continue
                process = pair_process(a.label, b.label, self.pump_labels)
                if process is not None:
                    out.append(LinkConfig(a.user, b.user, a.label, b.label, process))
        return tuple(sorted(out, key=lambda k: (order[k.user_a], order[k.user_b], k.channel_a)))

    def uncovered_user_pairs(self) -> tuple[tuple[str, str], ...]:
        """User pairs that share no correlated channel pair (empty for a full network)."""
        linked = {(k.user_a, k.user_b) for k in self.links()}
        names = [u.name for u in self.users]
        return tuple(
            (a, b)
            for i, a in enumerate(names)
            for b in names[i + 1 :]
            if (a, b) not in linked and (b, a) not in linked
        )


_TOP_KEYS = {
    "tec",
    "ring_temperature_c",
    "reference_tagger",
    "window_ps",
    "bin_ps",
    "max_delay_ps",
    "interferometer_delay_ps",
    "update_s",
    "scan_steps",
    "step_s",
    "settle_s",
    "sifting",
    "ec_efficiency",
    "max_clock_offset_s",
    "max_drift_ppm",
    "source",
    "pumps",
    "users",
    "channels",
    "sim",
}
_PUMP_KEYS = {"label", "laser", "wavelength_nm", "power_mw"}
_USER_KEYS = {"interferometer", "volts_per_2pi"}
_CHANNEL_KEYS = {"label", "user", "tagger", "input"}
_SIM_CHANNEL_KEYS = {
    "transmission",
    "fibre_m",
    "detector_efficiency",
    "dark_hz",
    "jitter_ps",
    "dead_time_ns",
    "noise_hz_per_mw",
    "latency_ps",
}
_SIM_KEYS = {
    "resonance_nm",
    "reference_temperature_c",
    "thermo_optic_hz_per_k",
    "linewidth_hz",
    "degenerate_hz_per_mw2",
    "nondegenerate_hz_per_mw2",
    "interferometer_delay_ps",
    "franson_visibility",
    "channels",
    "users",
    *_SIM_CHANNEL_KEYS,
}
_SIM_USER_KEYS = {"rad_per_v", "phase_offset_rad", "drift_rad2_per_s", "phase_drift", "drift"}
_DRIFT_KEYS = {f.name for f in fields(DriftParams)}


def _label(t: Table, name: str = "label") -> int:
    value = t.number(name, check=lambda v: v.is_integer(), expected="an integer channel label")
    return int(value)


def _array(data: Mapping[str, Any], key: str, prefix: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SectionError(f"{prefix}.{key}", f"expected an array of tables [[{prefix}.{key}]]")
    return value


def _declared(t: Table, key: str, classes: Mapping[str, str], cls: str) -> str:
    name = t.string(key)
    if classes.get(name) != cls:
        raise SectionError(t.key(key), f"got {name!r}, expected a declared {cls} instrument")
    return name


def parse_entanglement(
    data: Any, classes: Mapping[str, str], models: Mapping[str, str]
) -> EntanglementConfig:
    """Validate ``[entanglement]``; ``classes``/``models`` map instrument name -> class/model."""
    t = Table(data, "entanglement", _TOP_KEYS)
    p = "entanglement"
    tec = _declared(t, "tec", classes, "tec")
    pumps_raw = _array(t.data, "pumps", p)
    if len(pumps_raw) != 2:
        raise SectionError(f"{p}.pumps", f"got {len(pumps_raw)} pumps, expected exactly 2")
    pumps = []
    for k, raw in enumerate(pumps_raw):
        pt = Table(raw, f"{p}.pumps[{k}]", _PUMP_KEYS)
        pumps.append(
            PumpConfig(
                label=_label(pt),
                laser=_declared(pt, "laser", classes, "laser"),
                wavelength_nm=pt.positive("wavelength_nm"),
                power_mw=pt.positive("power_mw"),
            )
        )
    if pumps[0].label == pumps[1].label or pumps[0].laser == pumps[1].laser:
        raise SectionError(f"{p}.pumps", "the two pumps need different labels and lasers")
    users_raw = t.table("users")
    if len(users_raw) < 2:
        raise SectionError(f"{p}.users", "expected at least two [entanglement.users.NAME]")
    users = []
    for name, raw in users_raw.items():
        ut = Table(raw, f"{p}.users.{name}", _USER_KEYS)
        port = None
        if "interferometer" in ut.data:
            port = _awg_port(ut, "interferometer", classes, models)
        users.append(UserConfig(name, port, ut.positive("volts_per_2pi", 1.0)))
    ports = [u.interferometer for u in users if u.interferometer is not None]
    if len(set(ports)) != len(ports):
        raise SectionError(f"{p}.users", "two users share one interferometer drive port")
    channels_raw = _array(t.data, "channels", p)
    if not channels_raw:
        raise SectionError(f"{p}.channels", "missing; expected [[entanglement.channels]] tables")
    channels = []
    seen: dict[tuple[str, int], int] = {}
    for k, raw in enumerate(channels_raw):
        ct = Table(raw, f"{p}.channels[{k}]", _CHANNEL_KEYS)
        label = _label(ct)
        if label in (pumps[0].label, pumps[1].label):
            raise SectionError(ct.key("label"), f"label {label} is a pump, not a channel")
        if any(c.label == label for c in channels):
            raise SectionError(ct.key("label"), f"channel {label} is listed twice")
        user = ct.string("user")
        if user not in users_raw:
            raise SectionError(ct.key("user"), f"got {user!r}, expected one of {list(users_raw)}")
        tagger = _declared(ct, "tagger", classes, "tdc")
        inputs: tuple[int, ...] = TAGGER_INPUTS.get(models.get(tagger, ""), ())
        inp = int(ct.number("input", check=inputs.__contains__, expected=f"one of {inputs}"))
        if (tagger, inp) in seen:
            raise SectionError(ct.key("input"), f"{tagger} input {inp} already has a channel")
        seen[(tagger, inp)] = label
        channels.append(ChannelConfig(label, user, tagger, inp))
    taggers = sorted({c.tagger for c in channels})
    if len(taggers) > 2:
        raise SectionError(f"{p}.channels", f"uses {len(taggers)} taggers; at most 2 supported")
    reference = t.string("reference_tagger", taggers[0])
    if reference not in taggers:
        raise SectionError(t.key("reference_tagger"), f"got {reference!r}, expected {taggers}")
    window = int(t.integer("window_ps", 200))
    bin_ps = int(t.integer("bin_ps", 10))
    max_delay = int(t.integer("max_delay_ps", 20_000))
    ifm = t.positive("interferometer_delay_ps", 800.0)
    if not bin_ps <= window < ifm:
        raise SectionError(
            t.key("window_ps"), f"got {window}: expected bin_ps <= window_ps < interferometer delay"
        )
    if max_delay < 4 * ifm:
        raise SectionError(
            t.key("max_delay_ps"), f"got {max_delay}: needs >= 4 x the interferometer delay"
        )
    config = EntanglementConfig(
        tec=tec,
        ring_temperature_c=t.number("ring_temperature_c", 25.0),
        pumps=(pumps[0], pumps[1]),
        users=tuple(users),
        channels=tuple(channels),
        reference_tagger=reference,
        window_ps=window,
        bin_ps=bin_ps,
        max_delay_ps=max_delay,
        interferometer_delay_ps=ifm,
        update_s=t.positive("update_s", 1.0),
        scan_steps=t.integer("scan_steps", 9, minimum=3),
        step_s=t.positive("step_s", 0.5),
        settle_s=t.positive("settle_s", 0.1),
        sifting=t.number("sifting", 0.5, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        ec_efficiency=t.number("ec_efficiency", 1.2, lambda v: v >= 1, "a number >= 1"),
        max_clock_offset_s=t.positive("max_clock_offset_s", 0.05),
        max_drift_ppm=t.positive("max_drift_ppm", 10.0),
        source=t.string("source", "pairs"),
    )
    if config.scan_steps % 2 == 0:
        raise SectionError(
            t.key("scan_steps"),
            f"got {config.scan_steps}: expected an odd number (every user steps its phase by "
            "2 pi / n, so a pair's phase sum steps by 4 pi / n and covers all n phases only "
            "for odd n)",
        )
    if "sim" in t.data:
        config = _with_sim(config, t.data["sim"])
    return config


def _awg_port(t: Table, key: str, classes: Mapping[str, str], models: Mapping[str, str]) -> Port:
    value = t.string(key)
    try:
        name, channel = parse_port(value)
    except ValueError:
        raise SectionError(t.key(key), f'got {value!r}, expected "AWG:CHANNEL"') from None
    if classes.get(name) != "awg":
        raise SectionError(t.key(key), f"got {value!r}: {name!r} is not a declared awg")
    channels = tuple(getattr(driver_class(models[name]), "channels", ()))
    if channels and channel not in channels:
        raise SectionError(t.key(key), f"got {value!r}: {name} has channels {channels}")
    return name, channel


def _channel_physics(t: Table, defaults: Mapping[str, float]) -> dict[str, float]:
    def get(key: str, check: Any, expected: str) -> float:
        return t.number(key, defaults[key], check, expected)

    return {
        "transmission": get("transmission", lambda v: 0 < v <= 1, "a number in (0, 1]"),
        "fibre_m": get("fibre_m", lambda v: v >= 0, "a length >= 0"),
        "detector_efficiency": get(
            "detector_efficiency", lambda v: 0 < v <= 1, "a number in (0, 1]"
        ),
        "dark_hz": get("dark_hz", lambda v: v >= 0, "a rate >= 0"),
        "jitter_ps": get("jitter_ps", lambda v: v >= 0, "a time >= 0"),
        "dead_time_ps": 1e3 * get("dead_time_ns", lambda v: v >= 0, "a time >= 0"),
        "noise_hz_per_mw": get("noise_hz_per_mw", lambda v: v >= 0, "a rate >= 0"),
        "latency_ps": get("latency_ps", lambda v: v >= 0, "a time >= 0"),
    }


_CHANNEL_DEFAULTS = {
    "transmission": 0.1,
    "fibre_m": 10.0,
    "detector_efficiency": 0.85,
    "dark_hz": 100.0,
    "jitter_ps": 30.0,
    "dead_time_ns": 50.0,
    "noise_hz_per_mw": 0.0,
    "latency_ps": 0.0,
}


def _with_sim(config: EntanglementConfig, data: Any) -> EntanglementConfig:
    p = "entanglement.sim"
    s = Table(data, p, _SIM_KEYS)
    defaults = {k: s.number(k, v) for k, v in _CHANNEL_DEFAULTS.items()}
    resonance = s.data.get("resonance_nm")
    if resonance is None:
        resonance = [pump.wavelength_nm for pump in config.pumps]
    if not (
        isinstance(resonance, list)
        and len(resonance) == 2
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in resonance
        )
    ):
        raise SectionError(s.key("resonance_nm"), f"got {resonance!r}, expected [nm, nm]")
    overrides: dict[int, Table] = {}
    for k, raw in enumerate(_array(s.data, "channels", p)):
        ct = Table(raw, f"{p}.channels[{k}]", {"label", *_SIM_CHANNEL_KEYS})
        label = _label(ct)
        if label not in {c.label for c in config.channels}:
            raise SectionError(ct.key("label"), f"{label} is not in entanglement.channels")
        if label in overrides:
            raise SectionError(ct.key("label"), f"channel {label} is overridden twice")
        overrides[label] = ct
    channels = []
    for c in config.channels:
        ct = overrides.get(c.label, Table({}, f"{p}.channels", set()))
        channels.append(
            ChannelPhysics(
                label=c.label,
                user=c.user,
                tagger=c.tagger,
                input=c.input,
                **_channel_physics(ct, defaults),
            )
        )
    users_raw = s.table("users")
    for name in users_raw:
        if name not in {u.name for u in config.users}:
            raise SectionError(f"{p}.users.{name}", "not a user of entanglement.users")
    users = []
    for u in config.users:
        ut = Table(users_raw.get(u.name, {}), f"{p}.users.{u.name}", _SIM_USER_KEYS)
        phase_drift, drift = _phase_drift(ut)
        users.append(
            UserPhysics(
                name=u.name,
                phase_port=u.interferometer,
                rad_per_v=ut.number("rad_per_v", 2 * 3.141592653589793 / u.volts_per_2pi),
                phase_offset_rad=ut.number("phase_offset_rad", 0.0),
                drift_rad2_per_s=ut.number("drift_rad2_per_s", 0.0, lambda v: v >= 0, ">= 0"),
                phase_drift=phase_drift,
                drift=drift,
            )
        )
    physics = PairSourcePhysics(
        pumps=tuple(  # type: ignore[arg-type]
            PumpPhysics(pump.label, pump.laser, float(nm))
            for pump, nm in zip(config.pumps, resonance, strict=True)
        ),
        tec=config.tec,
        channels=tuple(channels),
        users=tuple(users),
        reference_temperature_c=s.number("reference_temperature_c", config.ring_temperature_c),
        thermo_optic_hz_per_k=s.number("thermo_optic_hz_per_k", -2.5e9),
        linewidth_hz=s.positive("linewidth_hz", 200e6),
        degenerate_hz_per_mw2=s.number("degenerate_hz_per_mw2", 3e6, lambda v: v >= 0, ">= 0"),
        nondegenerate_hz_per_mw2=s.number(
            "nondegenerate_hz_per_mw2", 6e6, lambda v: v >= 0, ">= 0"
        ),
        interferometer_delay_ps=s.positive(
            "interferometer_delay_ps", config.interferometer_delay_ps
        ),
        franson_visibility=s.number(
            "franson_visibility", 0.98, lambda v: 0 <= v <= 1, "a number in [0, 1]"
        ),
    )
    return EntanglementConfig(**{**config.__dict__, "sim": physics})


def _phase_drift(ut: Table) -> tuple[str, DriftParams | None]:
    """A sim user's drift choice and, for "model", its DriftParams (None: the defaults)."""
    choice = ut.string("phase_drift", "random_walk")
    if choice not in PHASE_DRIFTS:
        raise SectionError(
            ut.key("phase_drift"), f"got {choice!r}, expected one of {list(PHASE_DRIFTS)}"
        )
    if choice == "random_walk":
        if "drift" in ut.data:
            raise SectionError(ut.key("drift"), 'drift-model parameters need phase_drift = "model"')
        return choice, None
    if "drift_rad2_per_s" in ut.data:
        raise SectionError(
            ut.key("drift_rad2_per_s"),
            'ambiguous with phase_drift = "model" (the model has its own random walk: '
            "random_walk_rad2_per_s in the drift table)",
        )
    if "drift" not in ut.data:
        return choice, None
    dt = Table(ut.table("drift"), ut.key("drift"), _DRIFT_KEYS)
    values = {key: dt.number(key) for key in dt.data}
    for key, value in values.items():  # one at a time, so the error names its key
        try:
            DriftParams(**{key: value})
        except ValueError as exc:
            problem = str(exc).removeprefix(f"DriftParams.{key}: ")
            raise SectionError(dt.key(key), problem) from None
    return choice, DriftParams(**values)
