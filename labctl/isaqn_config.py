"""The ``[isaqn]`` section of a bench file: the ISAQN network as the operator knows it.

Layout (``configs/isaqn_sim.toml`` is a commented example)::

    [isaqn]                      laser, scope, icr, sample_rate_hz, record_length, ...
    [isaqn.nodes.NAME]           carrier_hz, symbol_rate_hz, pilot_period, awg_i, awg_q, ...
    [isaqn.nodes.NAME.pzt_drive] function, freq_hz, amplitude_vpp (applied at start)
    [isaqn.sim]                  the twin's hidden physics (simulated benches only)
    [isaqn.sim.nodes.NAME]       xi_snu, pzt_rad_per_v, phase_offset_rad, ...
    [[isaqn.sim.events]]         x_m, y_m, t_s, freq_hz, cycles, amplitude_rad

Everything is checked before anything connects; errors name the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.sim.bench import parse_port
from drivers.sim.isaqn import NetworkPhysics, NodePhysics, VibrationEvent
from labctl.config_table import SectionError as IsaqnConfigError
from labctl.config_table import Table as _Table

Port = tuple[str, int]


@dataclass(frozen=True)
class PztDrive:
    """A standard waveform the job puts on a node's PZT port (a vibration stand-in)."""

    function: str
    freq_hz: float
    amplitude_vpp: float


@dataclass(frozen=True)
class NodeConfig:
    """One child node: its band, its symbols and where its drive comes from."""

    name: str
    carrier_hz: float
    symbol_rate_hz: float
    pilot_period: int
    pilot_amplitude: float
    va_snu: float
    awg_i: Port
    awg_q: Port
    quadrature_per_v: float
    sequence_symbols: int
    fibre_m: float
    x_m: float
    y_m: float
    pzt: Port | None = None
    pzt_drive: PztDrive | None = None


@dataclass(frozen=True)
class IsaqnConfig:
    """The receiver, the analysis settings and the nodes."""

    laser: str
    scope: str
    icr: str
    sample_rate_hz: float
    record_length: int
    scope_scale_v_per_div: float
    eta: float
    beta: float
    rolloff: float
    pulse_span_symbols: int
    fibre_index: float
    wave_speed_m_s: float
    splitter_ports: int
    calibration_records: int
    update_s: float
    spm_false_alarm: float
    nodes: tuple[NodeConfig, ...]
    sim: NetworkPhysics | None = None
    channel_i: int = 1
    channel_q: int = 2

    def node(self, name: str) -> NodeConfig:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _port(t: _Table, name: str, awgs: Mapping[str, str], *, required: bool = True) -> Port | None:
    value = t.data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise IsaqnConfigError(t.key(name), f'got {value!r}, expected a port "AWG:CHANNEL"')
    try:
        port = parse_port(value)
    except ValueError:
        raise IsaqnConfigError(t.key(name), f'got {value!r}, expected "AWG:CHANNEL"') from None
    if awgs.get(port[0]) != "awg":
        names = ", ".join(n for n, c in awgs.items() if c == "awg") or "none declared"
        raise IsaqnConfigError(t.key(name), f"got {value!r}, expected a port of an awg ({names})")
    return port


_TOP_KEYS = {
    "laser",
    "scope",
    "icr",
    "sample_rate_hz",
    "record_length",
    "scope_scale_v_per_div",
    "eta",
    "beta",
    "rolloff",
    "pulse_span_symbols",
    "fibre_index",
    "wave_speed_m_s",
    "splitter_ports",
    "calibration_records",
    "update_s",
    "spm_false_alarm",
    "nodes",
    "sim",
}
_NODE_KEYS = {
    "carrier_hz",
    "symbol_rate_hz",
    "pilot_period",
    "pilot_amplitude",
    "va_snu",
    "awg_i",
    "awg_q",
    "pzt",
    "pzt_drive",
    "quadrature_per_v",
    "sequence_symbols",
    "fibre_m",
    "x_m",
    "y_m",
}
_SIM_KEYS = {
    "eta",
    "v_el_snu",
    "linewidth_hz",
    "alpha_db_per_km",
    "icr_v_per_unit",
    "laser_nominal_mw",
    "nodes",
    "events",
}
_SIM_NODE_KEYS = {
    "xi_snu",
    "pzt_rad_per_v",
    "phase_offset_rad",
    "drift_rad2_per_s",
    "voa_db",
    "fibre_m",
    "quadrature_per_v",
}
_EVENT_KEYS = {"x_m", "y_m", "t_s", "freq_hz", "cycles", "amplitude_rad"}


def parse_isaqn(data: Any, instrument_classes: Mapping[str, str]) -> IsaqnConfig:
    """Validate the ``[isaqn]`` table; ``instrument_classes`` maps instrument name -> class."""
    t = _Table(data, "isaqn", _TOP_KEYS)
    for role, cls in (("laser", "laser"), ("scope", "scope")):
        name = t.string(role)
        if instrument_classes.get(name) != cls:
            raise IsaqnConfigError(t.key(role), f"got {name!r}, expected a declared {cls}")
    fs = t.positive("sample_rate_hz")
    span = t.integer("pulse_span_symbols", 16, minimum=2)
    nodes_table = t.table("nodes")
    if not nodes_table:
        raise IsaqnConfigError("isaqn.nodes", "missing; expected at least one [isaqn.nodes.NAME]")
    nodes = []
    for name, raw in nodes_table.items():
        n = _Table(raw, f"isaqn.nodes.{name}", _NODE_KEYS)
        carrier = n.number("carrier_hz", check=lambda v: abs(v) < fs / 2, expected="|f| < fs/2")
        rate = n.positive("symbol_rate_hz")
        sps = fs / rate
        if not (sps >= 2 and abs(sps - round(sps)) < 1e-9 * sps):
            raise IsaqnConfigError(
                n.key("symbol_rate_hz"),
                f"got {rate:g}, expected a divisor of sample_rate_hz {fs:g} (>= 2 samples)",
            )
        seq = n.integer("sequence_symbols", 10_000, minimum=2 * span)
        if abs((seq * round(sps) * carrier / fs) % 1.0) > 1e-9:
            raise IsaqnConfigError(
                n.key("sequence_symbols"),
                f"got {seq}: the carrier {carrier:g} Hz must complete whole cycles in the "
                f"looped sequence ({seq} symbols at {rate:g} Bd)",
            )
        drive = None
        if "pzt_drive" in raw:
            d = _Table(
                raw["pzt_drive"], n.key("pzt_drive"), {"function", "freq_hz", "amplitude_vpp"}
            )
            function = d.string("function", "SIN").upper()
            if function not in ("SIN", "SQU", "TRI", "RAMP"):
                raise IsaqnConfigError(d.key("function"), f"got {function!r}, expected SIN/TRI/...")
            drive = PztDrive(function, d.positive("freq_hz"), d.positive("amplitude_vpp"))
        pzt = _port(n, "pzt", instrument_classes, required=False)
        if drive is not None and pzt is None:
            raise IsaqnConfigError(n.key("pzt_drive"), "given, but the node has no pzt port")
        nodes.append(
            NodeConfig(
                name=name,
                carrier_hz=carrier,
                symbol_rate_hz=rate,
                pilot_period=n.integer("pilot_period", 4, minimum=2),
                pilot_amplitude=n.positive("pilot_amplitude", 20.0),
                va_snu=n.positive("va_snu", 12.0),
                awg_i=_port(n, "awg_i", instrument_classes),  # type: ignore[arg-type]
                awg_q=_port(n, "awg_q", instrument_classes),  # type: ignore[arg-type]
                quadrature_per_v=n.positive("quadrature_per_v"),
                sequence_symbols=seq,
                fibre_m=n.positive("fibre_m"),
                x_m=n.number("x_m", 0.0),
                y_m=n.number("y_m", 0.0),
                pzt=pzt,
                pzt_drive=drive,
            )
        )
    ports = [p for node in nodes for p in (node.awg_i, node.awg_q, node.pzt) if p is not None]
    for p in ports:
        if ports.count(p) > 1:
            raise IsaqnConfigError("isaqn.nodes", f"AWG port {p[0]}:{p[1]} is used twice")
    config = IsaqnConfig(
        laser=t.string("laser"),
        scope=t.string("scope"),
        icr=t.string("icr", "icr"),
        sample_rate_hz=fs,
        record_length=t.integer("record_length", 100_000, minimum=1024),
        scope_scale_v_per_div=t.positive("scope_scale_v_per_div", 0.01),
        eta=t.number("eta", 0.42, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        beta=t.number("beta", 0.98, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        rolloff=t.number("rolloff", 0.25, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        pulse_span_symbols=span,
        fibre_index=t.number("fibre_index", 1.468, lambda v: v >= 1, "a number >= 1"),
        wave_speed_m_s=t.positive("wave_speed_m_s", 6000.0),
        splitter_ports=t.integer("splitter_ports", 8),
        calibration_records=t.integer("calibration_records", 4),
        update_s=t.positive("update_s", 1.0),
        spm_false_alarm=t.number(
            "spm_false_alarm", 1e-3, lambda v: 0 < v < 1, "a probability in (0, 1)"
        ),
        nodes=tuple(nodes),
    )
    if config.splitter_ports < len(nodes):
        raise IsaqnConfigError(
            "isaqn.splitter_ports",
            f"got {config.splitter_ports}, fewer than the {len(nodes)} nodes",
        )
    if "sim" in t.data:
        return _with_sim(config, t.data["sim"])
    return config


def _with_sim(config: IsaqnConfig, data: Any) -> IsaqnConfig:
    s = _Table(data, "isaqn.sim", _SIM_KEYS)
    sim_nodes = s.table("nodes")
    for name in sim_nodes:
        if name not in {n.name for n in config.nodes}:
            raise IsaqnConfigError(f"isaqn.sim.nodes.{name}", "not a node of isaqn.nodes")
    physics_nodes = []
    for node in config.nodes:
        n = _Table(sim_nodes.get(node.name, {}), f"isaqn.sim.nodes.{node.name}", _SIM_NODE_KEYS)
        physics_nodes.append(
            NodePhysics(
                name=node.name,
                carrier_hz=node.carrier_hz,
                symbol_rate_hz=node.symbol_rate_hz,
                rolloff=config.rolloff,
                drive_i=node.awg_i,
                drive_q=node.awg_q,
                quadrature_per_v=n.positive("quadrature_per_v", node.quadrature_per_v),
                fibre_m=n.positive("fibre_m", node.fibre_m),
                x_m=node.x_m,
                y_m=node.y_m,
                pzt=node.pzt,
                pzt_rad_per_v=n.number("pzt_rad_per_v", 0.0),
                xi_snu=n.number("xi_snu", 0.0, lambda v: v >= 0, "a number >= 0"),
                voa_db=n.number("voa_db", 0.0, lambda v: v >= 0, "a number >= 0"),
                phase_offset_rad=n.number("phase_offset_rad", 0.0),
                drift_rad2_per_s=n.number("drift_rad2_per_s", 0.0, lambda v: v >= 0, ">= 0"),
            )
        )
    events_raw = s.data.get("events", [])
    if not isinstance(events_raw, list):
        raise IsaqnConfigError(
            "isaqn.sim.events", "expected an array of tables [[isaqn.sim.events]]"
        )
    events = []
    for i, raw in enumerate(events_raw):
        e = _Table(raw, f"isaqn.sim.events[{i}]", _EVENT_KEYS)
        events.append(
            VibrationEvent(
                x_m=e.number("x_m"),
                y_m=e.number("y_m"),
                t_s=e.number("t_s", check=lambda v: v >= 0, expected="a time >= 0 s"),
                freq_hz=e.positive("freq_hz"),
                cycles=e.positive("cycles", 3.0),
                amplitude_rad=e.positive("amplitude_rad"),
            )
        )
    physics = NetworkPhysics(
        nodes=tuple(physics_nodes),
        laser=config.laser,
        laser_nominal_mw=s.positive("laser_nominal_mw", 1.0),
        eta=s.number("eta", config.eta, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        v_el_snu=s.number("v_el_snu", 0.18, lambda v: v >= 0, "a number >= 0"),
        linewidth_hz=s.number("linewidth_hz", 100.0, lambda v: v >= 0, "a number >= 0"),
        alpha_db_per_km=s.number("alpha_db_per_km", 0.2, lambda v: v >= 0, "a number >= 0"),
        splitter_ports=config.splitter_ports,
        fibre_index=config.fibre_index,
        wave_speed_m_s=config.wave_speed_m_s,
        icr_v_per_unit=s.positive("icr_v_per_unit", 0.02),
        pulse_span_symbols=config.pulse_span_symbols,
        events=tuple(events),
    )
    return IsaqnConfig(**{**config.__dict__, "sim": physics})
