"""Simulated Santec TSL-570 tunable laser: an external-cavity laser that drifts when free-running.

Command set
-----------
Speaks the TSL-570 command subset that this driver and third-party TSL drivers (pymeasure,
QMI, photonmover) use, in both of the laser's command modes, selected with
``:SYSTem:COMMunicate:CODe 0|1``:

* Legacy (code 0, the power-on default here): a bare ``:WAV`` number is in nm and ``:WAV?``
  replies in nm (``1550.0000``);
* SCPI (code 1): a bare number is in metres and ``:WAV?`` replies in metres (NR3,
  ``+1.55000000E-06``).

Unit suffixes (``1550.1nm``) are accepted in both. ``:POW`` follows ``:POW:UNIT`` (0 dBm,
1 mW); ``:POW:ACT?``, ``:SYST:ALER?`` (``No alerts.``), ``:SYST:ERR?`` (``0,"No error"``)
and the common commands; ``*OPC?`` answers 0 while the diode is still turning on.
Terminator CR both ways.

Fine tuning (``:WAVelength:FINetuning``): the value range -100.00 to +100.00 in steps of
0.01 and ``:WAVelength:FINetuning:DISable`` are those of the TSL-550/570 command reference
as the QMI and photonmover TSL drivers implement them; the unit is not stated there. The twin
takes it in pm, so one step is 0.01 pm (1.25 MHz at 1550 nm) against 0.1 pm (12.5 MHz) for
``:WAV`` at 4 decimals of nm. The fine-tuning offset adds to the ``:WAV`` setting; ``:WAV?``
still reports the coarse setting and ``:WAV:FIN?`` the offset (a plain number in pm in both
command modes: a simplification). A new ``:WAV`` setting and ``:WAV:FIN:DIS`` end fine tuning
(offset back to 0).

Physics read by other simulators
--------------------------------
Emitted power: follows the setpoint with the diode's turn-on time constant once emission is
on, 0 when off (:meth:`SimSantecTSL570.optical_power_mw`).

Optical frequency (:meth:`SimSantecTSL570.optical_frequency_hz`; :attr:`wavelength_m` is
c over it, the vacuum wavelength the microring twin and the wavemeter see)::

    nu(t) = c / (lambda_set + d_lambda_fine) + nu_hop + [a (t - t0) + W(t - t0)]

The bracket is the free-running drift of an external-cavity diode laser, on only with the
simulator option ``free_running_drift = true`` (off by default, so the laser sits exactly
on its setting as the ISAQN and pair-source twins assume): a linear part
``a = drift_rate_hz_per_s`` (default 30 kHz/s, ~110 MHz or ~0.9 pm per hour, inside the
+-1 pm/h wavelength stability typical of ECL datasheets) and a Wiener process W of
diffusion ``D = drift_diffusion_hz2_per_s`` (default 1e12 Hz^2/s: sigma = sqrt(D t) is 8 MHz
after a minute, 17 MHz after 5 minutes, 60 MHz after an hour: tens of MHz over minutes, the
scale of cavity-length wander from room-temperature changes). W is sampled on a grid of
``drift_step_s`` (default 0.1 s), W(0) = 0, increments N(0, D * step), and linearly
interpolated between grid points (so Var W(t) = D t exactly on the grid, slightly less
between). Its random numbers come from generators keyed by (bench seed, CRC-32 of the
instrument name, chunk index): reproducible for a bench seed, independent of the order in
which simulators are built or queried, and drawn without touching the bench's shared
generator (so turning the drift on shifts no other simulator's noise).

Mode hops (:meth:`SimSantecTSL570.mode_hop`, the fault hook for re-acquisition tests): the
cavity jumps to a neighbouring longitudinal mode, a step ``nu_hop`` of the order of the
external cavity's free spectral range (GHz). As in a real ECL it stays: fine tuning (a small
change of the same cavity) keeps the laser on the wrong mode; only re-tuning (a new ``:WAV``
setting, which re-positions the cavity from the calibration table) or ``*RST`` lands it back.

Time history: every change of a setting is recorded with the bench time at which it took
effect (the last 4096 changes), so other simulators can ask for the frequency or power at an
earlier time (the wavemeter's measurement frames lie up to its averaging window in the past).
A time before the oldest record gets the oldest record.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    LENGTH_UNITS,
    SETTINGS_CONFLICT,
    Arg,
    check_range,
    error,
    fmt_float,
    parse_bool_arg,
    parse_number,
)

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

SPEED_OF_LIGHT_M_S = 299_792_458.0
WAVELENGTH_RANGE_M = (1480e-9, 1640e-9)
POWER_RANGE_MW = (0.04, 20.0)
TURN_ON_TAU_S = 0.05  # diode current settling after :POW:STAT 1
FINE_TUNING_RANGE_PM = (-100.0, 100.0)
FINE_TUNING_STEP_PM = 0.01

# free-running drift defaults (module docstring)
DRIFT_RATE_HZ_PER_S = 30e3
DRIFT_DIFFUSION_HZ2_PER_S = 1e12
DRIFT_STEP_S = 0.1
_WALK_CHUNK = 4096
_HISTORY_MAX = 4096


def mw_to_dbm(power_mw: float) -> float:
    return 10.0 * math.log10(power_mw)


def dbm_to_mw(power_dbm: float) -> float:
    return 10.0 ** (power_dbm / 10.0)


class RandomWalk:
    """W(t): a Wiener process of diffusion ``diffusion_hz2_per_s`` on a grid of ``step_s``.

    W(n step) = sum of n increments N(0, D step), W(0) = 0, W(t < 0) = 0, linear between grid
    points. Increments of chunk c (4096 grid steps) come from ``default_rng([*key, c])``, so
    any time can be asked for in any order and gets the same value. The walk to a chunk is
    summed chunk by chunk the first time (cost proportional to the time reached); the last 8
    chunks are cached.
    """

    def __init__(self, key: tuple[int, ...], diffusion_hz2_per_s: float, step_s: float) -> None:
        if not (diffusion_hz2_per_s >= 0 and math.isfinite(diffusion_hz2_per_s)):
            raise ValueError(f"drift diffusion must be >= 0 Hz^2/s, got {diffusion_hz2_per_s}")
        if not (step_s > 0 and math.isfinite(step_s)):
            raise ValueError(f"drift step must be > 0 s, got {step_s}")
        self.key = key
        self.step_s = float(step_s)
        self.sigma_hz = math.sqrt(diffusion_hz2_per_s * step_s)  # per grid step
        self._starts = [0.0]  #: W at the first grid point of each chunk summed so far
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()

    def _chunk(self, c: int) -> np.ndarray:
        values = self._chunks.get(c)
        if values is None:
            steps = np.random.default_rng([*self.key, c]).standard_normal(_WALK_CHUNK)
            walk = np.cumsum(steps * self.sigma_hz)
            # grid point c*CHUNK holds the start value; increment i moves to point i + 1
            values = self._starts[c] + np.concatenate(([0.0], walk))
            self._chunks[c] = values
            if len(self._chunks) > 8:
                self._chunks.popitem(last=False)
            if len(self._starts) == c + 1:
                self._starts.append(float(values[-1]))
        return values

    def at_index(self, n: int) -> float:
        """W at grid point ``n`` (0 for n <= 0)."""
        if n <= 0 or self.sigma_hz == 0.0:
            return 0.0
        c = n // _WALK_CHUNK
        while len(self._starts) <= c:  # sum forward chunk by chunk
            self._chunk(len(self._starts) - 1)
        return float(self._chunk(c)[n - c * _WALK_CHUNK])

    def at(self, t_s: float) -> float:
        """W(t) in Hz, linear between grid points."""
        if t_s <= 0.0 or self.sigma_hz == 0.0:
            return 0.0
        x = t_s / self.step_s
        n = math.floor(x)
        frac = x - n
        w0 = self.at_index(n)
        return w0 if frac == 0.0 else w0 + frac * (self.at_index(n + 1) - w0)


@dataclass(frozen=True)
class LaserState:
    """The settings that shape the emitted light, from bench time ``t_s`` on."""

    t_s: float
    emission: bool
    on_since_s: float
    power_setpoint_mw: float
    set_wavelength_m: float
    fine_tuning_pm: float
    mode_hop_hz: float

    @property
    def set_frequency_hz(self) -> float:
        """c over the set wavelength plus the fine-tuning offset (vacuum)."""
        return SPEED_OF_LIGHT_M_S / (self.set_wavelength_m + self.fine_tuning_pm * 1e-12)

    def power_mw(self, t_s: float) -> float:
        """First-order turn-on after emission was switched on; 0 while off."""
        if not self.emission:
            return 0.0
        elapsed = max(0.0, t_s - self.on_since_s)
        return self.power_setpoint_mw * (1.0 - math.exp(-elapsed / TURN_ON_TAU_S))


class SimSantecTSL570(SimInstrument):
    instrument_class = "laser"
    model = "santec_tsl570"
    identity = "SANTEC,TSL-570,22100001,0001.000.0001"
    terminator = b"\r"
    reply_terminator = b"\r"

    def __init__(
        self, name: str, bench: BenchModel, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = dict(options or {})
        known = {
            "free_running_drift",
            "drift_rate_hz_per_s",
            "drift_diffusion_hz2_per_s",
            "drift_step_s",
        }
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(
                f"{name}: unknown santec_tsl570 simulator option(s) {unknown}; "
                f"known: {sorted(known)}"
            )
        drift_on = opts.get("free_running_drift", False)
        if not isinstance(drift_on, bool):
            raise ValueError(f"{name}: sim option free_running_drift must be true or false")
        self.free_running_drift = drift_on
        self.drift_rate_hz_per_s = _finite(name, opts, "drift_rate_hz_per_s", DRIFT_RATE_HZ_PER_S)
        diffusion = _finite(name, opts, "drift_diffusion_hz2_per_s", DRIFT_DIFFUSION_HZ2_PER_S)
        step_s = _finite(name, opts, "drift_step_s", DRIFT_STEP_S)
        try:
            self.walk = RandomWalk(
                (int(bench.seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), 0xD81F7),
                diffusion,
                step_s,
            )
        except ValueError as exc:
            raise ValueError(f"{name}: sim option {exc}") from None
        self.drift_start_s = bench.clock.now_s()
        self._times: list[float] = []
        self._states: list[LaserState] = []
        super().__init__(name, bench, opts)

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        self.power_unit_mw = False  # power-on default: dBm
        self.scpi_mode = False  # power-on default: Legacy command set
        self.alert = ""
        self._record(
            emission=False,
            on_since_s=0.0,
            power_setpoint_mw=1.0,
            set_wavelength_m=1550.000e-9,
            fine_tuning_pm=0.0,
            mode_hop_hz=0.0,
        )

    @property
    def state(self) -> LaserState:
        """The settings in effect now."""
        return self._states[-1]

    def _record(self, **changes: Any) -> None:
        """Put ``changes`` into effect at the bench's now and remember when."""
        now = self.now_s()
        with self.lock:
            if self._states:
                new = replace(self._states[-1], t_s=now, **changes)
            else:
                new = LaserState(t_s=now, **changes)
            if self._times and self._times[-1] >= now:  # same instant: the last one wins
                self._times[-1], self._states[-1] = now, new
            else:
                self._times.append(now)
                self._states.append(new)
            if len(self._states) > _HISTORY_MAX:
                del self._times[: _HISTORY_MAX // 2], self._states[: _HISTORY_MAX // 2]

    def state_at(self, t_s: float) -> LaserState:
        """The settings in effect at bench time ``t_s`` (the oldest record before it)."""
        with self.lock:
            i = bisect.bisect_right(self._times, t_s) - 1
            return self._states[max(i, 0)]

    # the settings as attributes (tests and snapshots read them)
    @property
    def emission(self) -> bool:
        return self.state.emission

    @property
    def power_setpoint_mw(self) -> float:
        return self.state.power_setpoint_mw

    @property
    def set_wavelength_m(self) -> float:
        """The ``:WAV`` setting (vacuum, without the fine-tuning offset)."""
        return self.state.set_wavelength_m

    @property
    def fine_tuning_pm(self) -> float:
        return self.state.fine_tuning_pm

    @property
    def wavelength_m(self) -> float:
        """Actual vacuum wavelength now: c / :meth:`optical_frequency_hz` (drift included)."""
        return SPEED_OF_LIGHT_M_S / self.optical_frequency_hz()

    @wavelength_m.setter
    def wavelength_m(self, value_m: float) -> None:
        """Re-tune to ``value_m`` as ``:WAV`` does: fine tuning ends, a mode hop is undone.

        The getter is the actual wavelength and this sets the setting: with the drift on,
        ``sim.wavelength_m *= k`` folds the drift of the moment into the new setting.
        """
        self._record(set_wavelength_m=float(value_m), fine_tuning_pm=0.0, mode_hop_hz=0.0)

    def register(self) -> None:
        e = self.engine
        e.add_value(
            ":POWer:STATe",
            lambda s: self.emission,
            self._set_emission,
            formatter=lambda v: "1" if v else "0",
        )
        e.add_value(
            ":WAVelength",
            lambda s: self.set_wavelength_m,
            self._set_wavelength,
            formatter=lambda m: fmt_float(m) if self.scpi_mode else f"{m * 1e9:.4f}",
        )
        e.add_value(
            ":WAVelength:FINetuning",
            lambda s: self.fine_tuning_pm,
            self._set_fine_tuning,
            formatter=lambda pm: f"{pm:+.2f}",
        )
        e.add(
            ":WAVelength:FINetuning:DISable",
            on_set=lambda a, s: self._record(fine_tuning_pm=0.0),
        )
        e.add_value(
            ":SYSTem:COMMunicate:CODe",
            lambda s: self.scpi_mode,
            self._set_code,
            formatter=lambda v: "1" if v else "0",
        )
        e.add("*OPC", on_query=lambda a, s: "1" if self._settled() else "0")
        e.add_value(
            ":POWer[:LEVel][:IMMediate][:AMPLitude]",
            lambda s: (
                self.power_setpoint_mw if self.power_unit_mw else mw_to_dbm(self.power_setpoint_mw)
            ),
            self._set_power,
        )
        e.add_value(
            ":POWer:UNIT",
            lambda s: self.power_unit_mw,
            self._set_unit,
            formatter=lambda v: "1" if v else "0",
        )
        e.add(":POWer:ACTual[:LEVel]", on_query=lambda a, s: self._actual_power())
        e.add(":SYSTem:ALERt", on_query=lambda a, s: f'"{self.alert or "No alerts."}"')

    # -- handlers ------------------------------------------------------------
    def _set_emission(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        on = parse_bool_arg(arg)
        if on and self.alert:
            raise error(SETTINGS_CONFLICT, f"LD cannot start: {self.alert}")
        if on and not self.emission:
            self._record(emission=True, on_since_s=self.now_s())
        elif not on:
            self._record(emission=False)

    def _set_code(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.scpi_mode = parse_bool_arg(arg)

    def _settled(self) -> bool:
        state = self.state
        return not state.emission or self.now_s() - state.on_since_s > 5 * TURN_ON_TAU_S

    def _set_wavelength(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        # a bare number is in metres in SCPI mode and in nm in Legacy mode
        units = LENGTH_UNITS if self.scpi_mode else {**LENGTH_UNITS, "": 1e-9}
        value = parse_number(
            arg,
            units=units,
            minimum=WAVELENGTH_RANGE_M[0],
            maximum=WAVELENGTH_RANGE_M[1],
        )
        self.wavelength_m = check_range(value, *WAVELENGTH_RANGE_M, "wavelength")

    def _set_fine_tuning(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(
            arg, minimum=FINE_TUNING_RANGE_PM[0], maximum=FINE_TUNING_RANGE_PM[1], default=0.0
        )
        value = check_range(value, *FINE_TUNING_RANGE_PM, "fine tuning (pm)")
        # the instrument quantises to its 0.01 step
        self._record(fine_tuning_pm=round(value / FINE_TUNING_STEP_PM) * FINE_TUNING_STEP_PM)

    def _set_power(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        if self.power_unit_mw:
            value = parse_number(arg, minimum=POWER_RANGE_MW[0], maximum=POWER_RANGE_MW[1])
        else:
            value = dbm_to_mw(
                parse_number(
                    arg, minimum=mw_to_dbm(POWER_RANGE_MW[0]), maximum=mw_to_dbm(POWER_RANGE_MW[1])
                )
            )
        self._record(power_setpoint_mw=check_range(value, *POWER_RANGE_MW, "power (mW)"))

    def _set_unit(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        token = arg.strip().upper() if isinstance(arg, str) else ""
        if token in ("0", "DBM"):
            self.power_unit_mw = False
        elif token in ("1", "MW"):
            self.power_unit_mw = True
        else:
            raise error(SETTINGS_CONFLICT, f"power unit {arg!r}: use 0 (dBm) or 1 (mW)")

    def _actual_power(self) -> str:
        power_mw = self.optical_power_mw()
        if self.power_unit_mw:
            return fmt_float(power_mw)
        return fmt_float(mw_to_dbm(power_mw) if power_mw > 0 else -99.0)

    # -- fault hooks -----------------------------------------------------------
    def mode_hop(self, delta_hz: float) -> None:
        """The cavity jumps by ``delta_hz`` to another longitudinal mode, from now on.

        Hops add up; the laser stays on the new mode through fine tuning until it is re-tuned
        (``:WAV``, or assigning :attr:`wavelength_m`) or reset (``*RST``).
        """
        if not math.isfinite(delta_hz):
            raise ValueError(f"{self.name}: mode hop must be a finite frequency, got {delta_hz}")
        self._record(mode_hop_hz=self.state.mode_hop_hz + float(delta_hz))

    # -- physics read by other simulators -----------------------------------
    def drift_hz(self, t_s: float | None = None) -> float:
        """Free-running drift a (t - t0) + W(t - t0) at bench time ``t_s`` (default now)."""
        if not self.free_running_drift:
            return 0.0
        t = self.now_s() if t_s is None else t_s
        elapsed = max(0.0, t - self.drift_start_s)
        return self.drift_rate_hz_per_s * elapsed + self.walk.at(elapsed)

    def optical_frequency_hz(self, t_s: float | None = None) -> float:
        """Actual optical frequency at bench time ``t_s`` (default now): setting + fine
        tuning + mode hop + free-running drift. Defined whether or not the laser emits."""
        t = self.now_s() if t_s is None else t_s
        state = self.state_at(t)
        return state.set_frequency_hz + state.mode_hop_hz + self.drift_hz(t)

    def optical_power_mw(self, t_s: float | None = None) -> float:
        """Emitted power at bench time ``t_s`` (default now): first-order turn-on after
        emission was switched on, 0 while off."""
        t = self.now_s() if t_s is None else t_s
        return self.state_at(t).power_mw(t)

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        return {
            "emission": state.emission,
            "wavelength_nm": self.wavelength_m * 1e9,
            "set_wavelength_nm": state.set_wavelength_m * 1e9,
            "fine_tuning_pm": state.fine_tuning_pm,
            "mode_hop_hz": state.mode_hop_hz,
            "drift_hz": self.drift_hz(),
            "optical_frequency_hz": self.optical_frequency_hz(),
            "power_setpoint_mw": state.power_setpoint_mw,
            "optical_power_mw": self.optical_power_mw(),
        }


def _finite(name: str, options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: sim option {key} must be a finite number, got {value!r}")
    return float(value)
