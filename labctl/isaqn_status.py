"""What the ISAQN job reports: one :class:`NetworkStatus` per update, one :class:`NodeStatus`
per child node. Plain data for the sinks (live display, HDF5 recorder, GUI); JSON-able through
:meth:`NetworkStatus.to_dict`.

Units are in the field names. ``nan`` means "not available yet" (e.g. a key rate before enough
symbols were disclosed, a strain resolution before the first phase spectrum).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeStatus:
    """One node at one update.

    Band and pilot: ``band_power_snu`` is the mean |y|^2 of the received quantum symbols
    [SNU, receiver output], ``pilot_power_snu`` the mean |pilot|^2, ``castdown_db`` the SPM
    castdown of the pilot line (0 dB for a quiet node).

    Vibration: ``vibrating`` is the SPM decision (hysteresis output), ``vibration_freq_hz`` the
    lowest significant line (nan when quiet), ``pilot_only`` the decision to stop the quantum
    modulation because the pilot no longer tracks. Phase statistics are over the update
    interval, of the unwrapped pilot phase with its mean removed: ``phase_rms_rad``,
    ``phase_peak_to_peak_rad``, ``phase_max_slope_rad_per_s``; ``phase_rad`` is the latest
    unwrapped phase. ``phase_floor_rad2_per_hz`` is the white floor of the phase PSD (one-sided)
    and ``strain_resolution_per_rthz`` its strain equivalent (physics.md section 1).

    CV-QKD (cumulative since the stream started, quiet periods only): transmittance and excess
    noise with their confidence intervals, ``n_symbols`` disclosed symbols used, the asymptotic
    key rate per symbol and in bit/s (quantum symbols only: pilots excluded).
    """

    name: str
    locked: bool
    band_power_snu: float
    pilot_power_snu: float
    castdown_db: float
    vibrating: bool
    vibration_freq_hz: float
    pilot_only: bool
    phase_rad: float
    phase_rms_rad: float
    phase_peak_to_peak_rad: float
    phase_max_slope_rad_per_s: float
    phase_floor_rad2_per_hz: float
    strain_resolution_per_rthz: float
    transmittance: float
    transmittance_ci: tuple[float, float]
    xi_snu: float
    xi_ci_snu: tuple[float, float]
    n_symbols: int
    v_el_snu: float
    key_rate_bits_per_symbol: float
    skr_bps: float


@dataclass(frozen=True)
class EventLocation:
    """A vibration source located from three or more nodes' waveforms.

    ``t_s`` is when the burst first showed at one of the nodes (stream time, s); ``nodes`` the
    nodes used and ``arrival_s`` their arrival times relative to the first of them, as seen
    at the center node (fibre delays included); ``sigma_x_m``/``sigma_y_m`` the 1-sigma
    uncertainties (nan when not available); ``ambiguous``: more than one position fits the
    arrival differences.
    """

    t_s: float
    x_m: float
    y_m: float
    sigma_x_m: float
    sigma_y_m: float
    rms_residual_s: float
    nodes: tuple[str, ...]
    arrival_s: tuple[float, ...]
    ambiguous: bool


@dataclass(frozen=True)
class NetworkStatus:
    """All nodes at one update: ``t_s`` stream time at the end of the data analysed [s]."""

    t_s: float
    records: int
    overloads: int
    nodes: tuple[NodeStatus, ...]
    location: EventLocation | None = None
    messages: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: nan becomes None."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
