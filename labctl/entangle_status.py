"""What the entanglement job reports at every update: per user pair, instruments, clocks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labctl.bench_control import LoopRow
    from labctl.interlocks import RuleStatus


@dataclass(frozen=True)
class PairStatus:
    """One row of the network table: a correlated channel pair shared by two users."""

    user_a: str
    user_b: str
    channel_a: int
    channel_b: int
    process: str
    singles_a_hz: float
    singles_b_hz: float
    coincidences_hz: float  #: in the central window (accidentals included)
    accidentals_hz: float  #: off-peak estimate for the same window
    car: float  #: coincidences / accidentals in the window (physics.md)
    car_err: float
    delay_ps: float  #: central peak of t_b - t_a (nan until found)
    visibility: float  #: raw Franson visibility, inverse-variance mean of the recent scans
    visibility_err: float
    qber_z: float
    qber_x: float
    sifted_hz: float  #: sifting x phase-averaged central-window rate of the recent scans
    key_rate_bps: float
    scans: int  #: phase scans that entered the visibility


@dataclass(frozen=True)
class PumpStatus:
    name: str
    label: int
    emission: bool
    wavelength_nm: float
    power_mw: float  #: measured emitted power


@dataclass(frozen=True)
class TecStatus:
    name: str
    temperature_c: float
    setpoint_c: float
    current_a: float
    output: bool


@dataclass(frozen=True)
class EntanglementStatus:
    """Everything one update shows."""

    time_s: float  #: data time since the merged stream started
    interval_s: float  #: the data the rates of this update are measured over
    pairs: tuple[PairStatus, ...]
    total_key_rate_bps: float
    pumps: tuple[PumpStatus, ...]
    tec: TecStatus | None
    clock_state: str
    clock_offset_ps: float
    clock_drift_ppm: float
    clock_locked_fraction: float
    lost_events: int
    scan_step: int
    messages: tuple[str, ...] = field(default_factory=tuple)
    #: the feedback loops the job runs (empty without ``[[loops]]`` or with ``--no-loops``)
    loops: tuple[LoopRow, ...] = ()
    #: every interlock rule's state
    interlocks: dict[str, RuleStatus] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (nan becomes None)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            return v

        out = asdict(self)
        out["loops"] = {
            r.name: {"kind": r.kind, "units": list(r.units), **asdict(r.status)} for r in self.loops
        }
        return clean(out)
