"""Phase drift of a fibre Franson interferometer: generator for twins, training and benchmarks.

Model (one control tick ``dt = tick_s``; all processes advanced with exact discretisations)::

    T_air(t)  = ambient_mean_c + daily_amplitude_c * cos(2 pi (t - daily_peak) / 86400 s)
                + hvac_amplitude_c * tri(psi(t)) + u(t)
    psi(t)    : HVAC cycle phase, d psi = 2 pi dt / hvac_period_s + N(0, hvac_phase_diffusion dt)
    u(t)      : Ornstein-Uhlenbeck (weather, occupancy), std ambient_ou_std_c, time ambient_ou_tau_s
    T_enc(t)  : first-order lag of T_air, time constant thermal_lag_s (interferometer enclosure)
    P(t)      : pump power, OU around pump_power_mw (relative std pump_power_rel_std)
    phi(t)    = phase_per_kelvin_rad * (T_enc - ambient_mean_c)
                + 2 pi franson_delay_s * pump_shift_hz_per_mw * (P - pump_power_mw)
                + w(t) + burst jitter
    w(t)      : random walk, increments N(0, random_walk_rad2_per_s dt), plus, inside vibration
                bursts, extra increments whose sum over a burst has rms burst_step_rad

Vibration bursts (doors, pumps, people walking by) start as a Poisson process of rate
``burst_rate_per_hour`` and last ``burst_duration_s``; inside a burst the phase also carries white
jitter of rms ``burst_amplitude_rad`` (vibration faster than a tick) and an accelerometer reads
``vibration_burst_mg`` above its floor.

Measurements: the phase a scan (or reference light) reads is ``phi + N(0, measurement_noise_rad)``;
telemetry is the lab-air thermometer (``ambient_c``, noise ``telemetry_noise_c``), the pump power
monitor (``pump_power_mw``) and the accelerometer rms (``vibration_mg``). The enclosure temperature
itself is NOT measured: predictors must learn the thermal lag.

Discretisation (input held constant over a tick, so each step is exact for it):
first-order lag ``y[k] = a y[k-1] + (1 - a) x[k]`` with ``a = exp(-dt / tau)``; OU
``u[k] = a u[k-1] + sigma sqrt(1 - a^2) n[k]``; random walk increments ``N(0, q dt)``; bursts start
in a tick with probability ``1 - exp(-rate dt)``.

Streaming: :class:`DriftProcess` advances the same block kernel as :func:`generate_drift`; each
noise source has its own random stream (spawned from ``seed``) that consumes a fixed number of
draws per tick, so the realisation does not depend on how the run is cut into blocks:
``generate_drift(n * tick, seed=s)`` equals ``n`` calls of ``DriftProcess(seed=s).step()``.
Before ``start_s`` the state is run in for ``burn_in_s`` (default five enclosure time constants) so
the enclosure temperature starts in its stationary regime.

External air (``air_c``): a simulated bench has its own room (``drivers.sim.environment``:
``bench.environment.ambient_c(t_s)``, which also heats the TEC stage). Passing that function as
``air_c`` (degC at the tick times, float64 array in, float64 array out, same shape) makes it
``T_air`` in place of the internal daily + HVAC + OU model, so one room drives every element of
the bench. It is called with the tick times of each block, including the negative times of the
burn-in (from ``start_s - burn_in_s``). The internal air model's random streams still draw their
numbers every tick (they are simply unused), so the other sources (random walk, bursts, pump,
noise) are the same realisation as without ``air_c`` for the same seed, and the result is still
cut-invariant. The thermal term stays ``phase_per_kelvin_rad * (T_enc - ambient_mean_c)``: with an
external room of another mean it carries a constant offset (a twin removes it by referencing
the phase to its value at t = 0). ``telemetry[:, 0]`` is that external air plus the thermometer
noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from scipy.signal import lfilter

SPEED_OF_LIGHT_M_S = 299_792_458.0
DAY_S = 86_400.0

#: Telemetry columns, in order.
TELEMETRY_NAMES: tuple[str, ...] = ("ambient_c", "pump_power_mw", "vibration_mg")

#: An external lab-air temperature: degC at tick times t_s (float64 array in, same-shape float64
#: array out), e.g. ``bench.environment.ambient_c`` of a simulated bench.
AirTemperature = Callable[[np.ndarray], np.ndarray]
#: A seed: an int, or a sequence of non-negative ints (numpy SeedSequence entropy).
Seed = int | Sequence[int]


def fibre_phase_per_kelvin_rad(
    *,
    delay_s: float = 800e-12,
    wavelength_m: float = 1550e-9,
    group_index: float = 1.468,
    dn_dt_per_k: float = 1.0e-5,
    n_alpha_per_k: float = 0.8e-6,
) -> float:
    """Thermal phase coefficient of an unbalanced fibre interferometer, rad/K.

    ``dphi/dT = 2 pi L (dn/dT + n alpha) / lambda`` with the path difference ``L = c delay / n_g``
    (800 ps -> 16.3 cm of SMF-28). Defaults: fused silica ``dn/dT ~ 1.0e-5 /K`` near 1550 nm,
    ``n alpha = 1.45 x 0.55e-6 ~ 0.8e-6 /K`` (thermal expansion of silica), SMF-28 group index
    1.468. Result ~ 7.1 rad/K.
    """
    path_m = SPEED_OF_LIGHT_M_S * delay_s / group_index
    return 2.0 * math.pi * path_m * (dn_dt_per_k + n_alpha_per_k) / wavelength_m


@dataclass(frozen=True)
class DriftParams:
    """Parameters of the drift model (module docstring).

    The defaults give a phase drifting at ~5 rad/h rms over minutes (HVAC cycle and weather seen
    through the enclosure lag; 1.7 rad rms change over an hour, ~15 rad peak to peak over a day),
    almost all of it predictable from the air temperature, plus a small unpredictable part
    (random walk 0.13 rad/sqrt(h), one vibration burst an hour leaving ~0.3 rad)."""

    #: control tick, s (the feedback loop and the predictors run once a second)
    tick_s: float = 1.0
    #: mean lab air temperature, degC (a typical air-conditioned optics lab)
    ambient_mean_c: float = 22.0
    #: amplitude of the daily cycle of the lab air, K. Air-conditioned labs are specified
    #: +-0.5..1 K over a day; we take 0.75 K.
    daily_amplitude_c: float = 0.75
    #: hour of the day at which the daily cycle peaks (afternoon, building heated by the sun), h
    daily_peak_hour: float = 15.0
    #: amplitude of the HVAC on/off cycling (triangle wave of a bang-bang thermostat), K.
    #: Typical thermostats hold +-0.2..0.5 K; we take 0.4 K.
    hvac_amplitude_c: float = 0.4
    #: HVAC cycle period, s (thermostat cycles of 10-30 min; 20 min)
    hvac_period_s: float = 1200.0
    #: phase diffusion of the HVAC cycle, rad^2/s: the period wanders with load; 2e-4 gives a
    #: phase std of ~0.5 rad after one cycle, so the cycle stays recognisable for a few periods
    hvac_phase_diffusion_rad2_per_s: float = 2.0e-4
    #: std of the slow random part of the air temperature (weather, people, equipment), K
    ambient_ou_std_c: float = 0.3
    #: correlation time of that slow part, s (one hour)
    ambient_ou_tau_s: float = 3600.0
    #: time constant of the interferometer enclosure (first-order lag of the air), s. Insulated
    #: enclosures with some thermal mass have time constants of tens of minutes; 30 min.
    thermal_lag_s: float = 1800.0
    #: thermal phase coefficient of the interferometer, rad/K (:func:`fibre_phase_per_kelvin_rad`:
    #: 800 ps path difference, dn/dT = 1e-5 /K, n alpha = 0.8e-6 /K, 1550 nm -> ~7.1 rad/K)
    phase_per_kelvin_rad: float = field(default_factory=fibre_phase_per_kelvin_rad)
    #: random-walk intensity of the phase, rad^2/s (fibre stress relaxation, thermal gradients the
    #: single-lag model misses). 5e-6 rad^2/s = 0.13 rad rms per hour: small beside the thermal
    #: drift, as in passively stable enclosed interferometers, but it bounds any predictor
    random_walk_rad2_per_s: float = 5.0e-6
    #: mean rate of vibration bursts, 1/h (doors, vacuum pumps, people: about one an hour)
    burst_rate_per_hour: float = 1.0
    #: duration of a burst, s
    burst_duration_s: float = 20.0
    #: rms of the fast phase jitter inside a burst, rad (vibration faster than the tick)
    burst_amplitude_rad: float = 0.3
    #: rms of the lasting phase offset one burst leaves (fibre settles elsewhere), rad
    burst_step_rad: float = 0.3
    #: accelerometer rms reading outside bursts, mg
    vibration_floor_mg: float = 0.5
    #: accelerometer rms reading added inside a burst, mg
    vibration_burst_mg: float = 20.0
    #: relative noise of the accelerometer reading (each term), dimensionless
    vibration_rel_noise: float = 0.2
    #: noise of the phase measured by a scan or reference light, rad (a fringe fit with a few
    #: thousand counts: ~3 degrees)
    measurement_noise_rad: float = 0.05
    #: noise of the lab-air thermometer, K (0.01 K resolution RTD/thermistor logger)
    telemetry_noise_c: float = 0.01
    #: Franson interferometer delay, s (also sets the pump-frequency coupling below)
    franson_delay_s: float = 800e-12
    #: mean pump power, mW (physics.md section 2: ~1 mW)
    pump_power_mw: float = 1.0
    #: relative std of the pump power fluctuations (1 %, laser + fibre coupling)
    pump_power_rel_std: float = 0.01
    #: correlation time of the pump power fluctuations, s
    pump_power_tau_s: float = 600.0
    #: noise of the pump power monitor, mW (0.1 % of 1 mW)
    pump_power_noise_mw: float = 1.0e-3
    #: pump frequency shift per mW: the wavemeter lock follows the ring resonance, which moves
    #: with the absorbed pump power (photothermal); ~50 MHz/mW. The two-photon phase moves by
    #: 2 pi delay dnu: 0.25 rad/mW, i.e. mrad for 1 % power changes (a small effect)
    pump_shift_hz_per_mw: float = 50.0e6
    #: run-in before ``start_s`` so the enclosure starts stationary, s (None: 5 thermal_lag_s)
    burn_in_s: float | None = None

    def __post_init__(self) -> None:
        positive = (
            "tick_s",
            "hvac_period_s",
            "ambient_ou_tau_s",
            "thermal_lag_s",
            "burst_duration_s",
            "pump_power_tau_s",
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not math.isfinite(float(value)):
                raise ValueError(f"DriftParams.{f.name}: got {value}, expected a finite number")
            if f.name in positive and not value > 0:
                raise ValueError(f"DriftParams.{f.name}: got {value}, expected > 0")
            if f.name not in ("ambient_mean_c", "daily_peak_hour") and value < 0:
                raise ValueError(f"DriftParams.{f.name}: got {value}, expected >= 0")

    @property
    def pump_phase_rad_per_mw(self) -> float:
        """Phase per mW of pump power change, rad/mW (``2 pi delay * shift``)."""
        return 2.0 * math.pi * self.franson_delay_s * self.pump_shift_hz_per_mw

    @property
    def burn_in_ticks(self) -> int:
        """Ticks run before ``start_s`` (default five enclosure time constants)."""
        burn_s = 5.0 * self.thermal_lag_s if self.burn_in_s is None else self.burn_in_s
        return math.ceil(burn_s / self.tick_s)

    @property
    def burst_ticks(self) -> int:
        """Length of a burst in ticks (at least one)."""
        return max(1, round(self.burst_duration_s / self.tick_s))


@dataclass(frozen=True)
class DriftTrace:
    """A generated drift record, one row per tick."""

    #: tick times, s, float64 (n,)
    t_s: np.ndarray
    #: true unwrapped interferometer phase drift, rad, float64 (n,)
    phase_rad: np.ndarray
    #: phase + measurement noise (what a scan would read), rad, float64 (n,)
    measured_phase_rad: np.ndarray
    #: measured telemetry, float64 (n, n_features), columns ``telemetry_names``
    telemetry: np.ndarray
    #: names of the telemetry columns (:data:`TELEMETRY_NAMES`)
    telemetry_names: tuple[str, ...]
    #: True inside a vibration burst (truth, for analysis), bool (n,)
    burst: np.ndarray

    def __len__(self) -> int:
        return int(self.t_s.size)

    def slice(self, start: int, stop: int) -> DriftTrace:
        """Rows ``start:stop`` as a new trace."""
        return DriftTrace(
            self.t_s[start:stop],
            self.phase_rad[start:stop],
            self.measured_phase_rad[start:stop],
            self.telemetry[start:stop],
            self.telemetry_names,
            self.burst[start:stop],
        )


# ---------------------------------------------------------------------------------------------
# Block kernel


_N_STREAMS = 10  # independent random streams, one per noise source (see _Kernel.block)


class _Kernel:
    """State of every sub-process; :meth:`block` advances ``n`` ticks and returns the records."""

    def __init__(
        self,
        params: DriftParams,
        seed: Seed,
        start_tick: int,
        air_c: AirTemperature | None = None,
    ) -> None:
        p = params
        self.p = p
        self.air_c = air_c
        self.rng = [
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(_N_STREAMS + 1)
        ]
        dt = p.tick_s
        self.a_lag = math.exp(-dt / p.thermal_lag_s)
        self.a_ou = math.exp(-dt / p.ambient_ou_tau_s)
        self.a_pump = math.exp(-dt / p.pump_power_tau_s)
        self.p_burst = -math.expm1(-p.burst_rate_per_hour / 3600.0 * dt)
        self.burst_len = p.burst_ticks
        init = self.rng[_N_STREAMS]
        # stationary starts for the OU processes, uniform HVAC phase
        self.ou_c = float(init.normal(0.0, p.ambient_ou_std_c))
        self.pump_dev_mw = float(init.normal(0.0, p.pump_power_rel_std * p.pump_power_mw))
        self.hvac_phase_rad = float(init.uniform(0.0, 2.0 * math.pi))
        self.walk_rad = 0.0
        self.ticks_since_burst = self.burst_len  # not in a burst
        self.tick = start_tick - p.burn_in_ticks
        # enclosure starts at the air temperature of the first run-in tick; the run-in forgets it
        self.enclosure_c = float("nan")
        if p.burn_in_ticks:
            self.block(p.burn_in_ticks)

    def block(self, n: int) -> tuple[np.ndarray, ...]:
        """Advance ``n`` ticks; returns (t_s, phase, measured, telemetry, burst)."""
        p, rng, dt = self.p, self.rng, self.p.tick_s
        k = self.tick + np.arange(1, n + 1, dtype=np.int64)
        t_s = k.astype(np.float64) * dt
        self.tick += n

        # each stream draws exactly n (or 2n) numbers per block: cut-invariant realisations
        e_ou = rng[0].standard_normal(n)
        e_hvac = rng[1].standard_normal(n)
        e_walk = rng[2].standard_normal(n)
        u_burst = rng[3].random(n)
        e_step = rng[4].standard_normal(n)
        e_jitter = rng[5].standard_normal(n)
        e_meas = rng[6].standard_normal(n)
        e_pump = rng[7].standard_normal(n)
        e_tel = rng[8].standard_normal((n, 2))
        e_vib = rng[9].standard_normal((n, 2))

        if self.air_c is None:
            air_c = self._internal_air_c(t_s, e_ou, e_hvac)
        else:  # the room of a bench; e_ou and e_hvac were drawn all the same (cut-invariance)
            air_c = _external_air_c(self.air_c, t_s)

        # enclosure: first-order lag of the air, exact for air held over the tick
        if math.isnan(self.enclosure_c):
            self.enclosure_c = float(air_c[0])
        enc, _ = lfilter(
            [1.0 - self.a_lag], [1.0, -self.a_lag], air_c, zi=[self.a_lag * self.enclosure_c]
        )
        self.enclosure_c = float(enc[-1])

        # pump power: OU around its mean
        s_pump = p.pump_power_rel_std * p.pump_power_mw * math.sqrt(1.0 - self.a_pump**2)
        pump_dev, _ = lfilter(
            [s_pump], [1.0, -self.a_pump], e_pump, zi=[self.a_pump * self.pump_dev_mw]
        )
        self.pump_dev_mw = float(pump_dev[-1])

        # bursts: Poisson starts; a start inside a burst restarts its clock
        starts = u_burst < self.p_burst
        idx = np.arange(n, dtype=np.int64)
        last = np.maximum.accumulate(np.where(starts, idx, -(10**12)))
        since = np.where(last >= 0, idx - last, self.ticks_since_burst + idx + 1)
        burst = since < self.burst_len
        self.ticks_since_burst = int(min(since[-1], self.burst_len))

        # random walk, with extra diffusion inside bursts (the lasting offset of a burst)
        step_rms = p.burst_step_rad / math.sqrt(self.burst_len)
        inc = math.sqrt(p.random_walk_rad2_per_s * dt) * e_walk + burst * step_rms * e_step
        walk = self.walk_rad + np.cumsum(inc)
        self.walk_rad = float(walk[-1])

        phase = (
            p.phase_per_kelvin_rad * (enc - p.ambient_mean_c)
            + p.pump_phase_rad_per_mw * pump_dev
            + walk
            + burst * p.burst_amplitude_rad * e_jitter
        )
        measured = phase + p.measurement_noise_rad * e_meas
        vib = p.vibration_floor_mg * (1.0 + p.vibration_rel_noise * e_vib[:, 0]) + burst * (
            p.vibration_burst_mg * (1.0 + p.vibration_rel_noise * e_vib[:, 1])
        )
        telemetry = np.empty((n, len(TELEMETRY_NAMES)), dtype=np.float64)
        telemetry[:, 0] = air_c + p.telemetry_noise_c * e_tel[:, 0]
        telemetry[:, 1] = p.pump_power_mw + pump_dev + p.pump_power_noise_mw * e_tel[:, 1]
        telemetry[:, 2] = np.maximum(vib, 0.0)
        return t_s, phase, measured, telemetry, burst

    def _internal_air_c(self, t_s: np.ndarray, e_ou: np.ndarray, e_hvac: np.ndarray) -> np.ndarray:
        """Daily cycle + HVAC triangle + OU at the tick times ``t_s`` (module docstring)."""
        p, dt = self.p, self.p.tick_s
        # slow air-temperature part: exact OU recursion
        s_ou = p.ambient_ou_std_c * math.sqrt(1.0 - self.a_ou**2)
        ou, _ = lfilter([s_ou], [1.0, -self.a_ou], e_ou, zi=[self.a_ou * self.ou_c])
        self.ou_c = float(ou[-1])
        # HVAC cycle: phase random walk around the nominal rate, triangle wave in [-1, 1]
        dpsi = (
            2.0 * math.pi * dt / p.hvac_period_s
            + math.sqrt(p.hvac_phase_diffusion_rad2_per_s * dt) * e_hvac
        )
        psi = self.hvac_phase_rad + np.cumsum(dpsi)
        self.hvac_phase_rad = float(np.mod(psi[-1], 2.0 * math.pi))
        hvac = (2.0 / math.pi) * np.arcsin(np.sin(psi))
        daily = np.cos(2.0 * math.pi * (t_s - p.daily_peak_hour * 3600.0) / DAY_S)
        return p.ambient_mean_c + p.daily_amplitude_c * daily + p.hvac_amplitude_c * hvac + ou


def _external_air_c(air_c: AirTemperature, t_s: np.ndarray) -> np.ndarray:
    """``air_c(t_s)``, checked: a finite float64 array of the shape of ``t_s``."""
    air = np.asarray(air_c(t_s.copy()), dtype=np.float64)
    if air.shape != t_s.shape or not np.all(np.isfinite(air)):
        raise ValueError(
            f"drift model air_c: at t_s {t_s[0]:.6g}..{t_s[-1]:.6g} s returned an array of shape "
            f"{air.shape} (all finite: {bool(np.all(np.isfinite(air)))}), expected shape "
            f"{t_s.shape} of finite temperatures in degC"
        )
    return air


def _ticks(duration_s: float, tick_s: float) -> int:
    return round(duration_s / tick_s)


def generate_drift(
    duration_s: float,
    params: DriftParams = DriftParams(),
    *,
    seed: Seed,
    start_s: float = 0.0,
    air_c: AirTemperature | None = None,
) -> DriftTrace:
    """Generate ``round(duration_s / tick_s)`` ticks of drift starting after ``start_s``.

    ``start_s`` is the time of day origin (0 = midnight) in s; the first tick is at
    ``start_s + tick_s``. Same ``seed``, ``start_s`` and ``air_c`` give the same realisation as
    :class:`DriftProcess`. ``air_c``: an external lab-air temperature replacing the internal
    air model (module docstring, "External air").
    """
    if not duration_s > 0:
        raise ValueError(f"generate_drift: duration_s: got {duration_s}, expected > 0")
    n = _ticks(duration_s, params.tick_s)
    if n < 1:
        raise ValueError(
            f"generate_drift: duration_s={duration_s} is shorter than one tick ({params.tick_s} s)"
        )
    kernel = _Kernel(params, seed, _ticks(start_s, params.tick_s), air_c)
    t_s, phase, measured, telemetry, burst = kernel.block(n)
    return DriftTrace(t_s, phase, measured, telemetry, TELEMETRY_NAMES, burst)


class DriftProcess:
    """Streaming form of :func:`generate_drift` for the simulated twins: one tick per :meth:`step`.

    Internally advances the block kernel ``block_ticks`` at a time (cheap per step); the
    realisation does not depend on the block size. :meth:`advance` returns many ticks at once
    (the same realisation). ``air_c``: an external lab-air temperature replacing the internal
    air model (module docstring, "External air"); with ``block_ticks`` > 1, :meth:`step` asks
    it up to ``block_ticks - 1`` ticks ahead.
    """

    def __init__(
        self,
        params: DriftParams = DriftParams(),
        *,
        seed: Seed,
        start_s: float = 0.0,
        block_ticks: int = 1024,
        air_c: AirTemperature | None = None,
    ) -> None:
        if block_ticks < 1:
            raise ValueError(f"DriftProcess: block_ticks: got {block_ticks}, expected >= 1")
        self.params = params
        self._kernel = _Kernel(params, seed, _ticks(start_s, params.tick_s), air_c)
        self._block_ticks = int(block_ticks)
        self._buf: tuple[np.ndarray, ...] = ()
        self._i = 0
        self._n = 0
        self.telemetry_names: tuple[str, ...] = TELEMETRY_NAMES
        #: time of the last tick, s
        self.t_s = float("nan")
        #: measured phase of the last tick (phase + measurement noise), rad
        self.measured_phase_rad = float("nan")
        #: True when the last tick was inside a vibration burst
        self.burst = False

    def step(self) -> tuple[float, np.ndarray]:
        """Advance one tick; returns (true phase, rad; telemetry float64 (n_features,))."""
        if self._i >= self._n:
            self._buf = self._kernel.block(self._block_ticks)
            self._i, self._n = 0, self._block_ticks
        i = self._i
        self._i += 1
        t_s, phase, measured, telemetry, burst = self._buf
        self.t_s = float(t_s[i])
        self.measured_phase_rad = float(measured[i])
        self.burst = bool(burst[i])
        return float(phase[i]), telemetry[i].copy()

    def advance(self, n: int) -> DriftTrace:
        """Advance ``n`` ticks at once; the same ticks as ``n`` calls of :meth:`step`.

        Ticks already generated for :meth:`step` come first; the rest are generated exactly
        (no ticks beyond the ``n`` asked for). The attributes of the last tick are updated.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"DriftProcess.advance: n: got {n!r}, expected an integer >= 1")
        n = int(n)
        parts: list[tuple[np.ndarray, ...]] = []
        take = min(n, self._n - self._i)
        if take > 0:
            parts.append(tuple(a[self._i : self._i + take] for a in self._buf))
            self._i += take
        if n > take:
            parts.append(self._kernel.block(n - take))
        t_s, phase, measured, telemetry, burst = (
            np.concatenate([part[j] for part in parts]) for j in range(5)
        )
        self.t_s = float(t_s[-1])
        self.measured_phase_rad = float(measured[-1])
        self.burst = bool(burst[-1])
        return DriftTrace(t_s, phase, measured, telemetry, TELEMETRY_NAMES, burst)
