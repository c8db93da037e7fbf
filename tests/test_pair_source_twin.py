"""Photon-pair source twin behind two simulated ID1000 taggers, read through the real driver.

Every test streams over the real data socket (or reads the counters over the control link)
with a manual clock, and checks the physics against closed forms: the Lorentzian ring
coupling, SFWM pair rates, singles, Franson interference, dead time, dark counts, the
taggers' free-running clocks and the source's truth log.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.registry import driver_class
from drivers.sim.bench import BenchModel
from drivers.sim.clock import VirtualClock
from drivers.sim.host import SimHost, SimSpec
from drivers.sim.pairsource import (
    CONSTANT_LATENCY_PS,
    SPEED_OF_LIGHT_M_S,
    USER_DRIFT_SEED_TAG,
    ChannelPhysics,
    PairSourcePhysics,
    PhotonPairSource,
    PumpPhysics,
    UserPhysics,
)
from drivers.tdc import TagBatch
from models.drift import DriftParams, DriftProcess

T_REF_C = 25.0
LINEWIDTH_HZ = 200e6
RAD_PER_V = math.pi / 2  # u0's phase shifter: 2 V = pi
ETA = 0.025 * 0.7  # transmission * detector efficiency of every channel
DEAD_PS = 50_000
DARK_HZ = 100.0
NOISE_HZ_PER_MW = 2000.0
TDC2_CLOCK = {"clock_offset_s": 0.05, "clock_drift_ppm": 15.0, "clock_drift_rate_ppm_per_s": 0.3}


def channel(label: int, user: str, tagger: str, inp: int, fibre_m: float, latency_ps: float):
    return ChannelPhysics(
        label=label,
        user=user,
        tagger=tagger,
        input=inp,
        transmission=0.025,
        fibre_m=fibre_m,
        detector_efficiency=0.7,
        dark_hz=DARK_HZ,
        jitter_ps=25.0,
        dead_time_ps=DEAD_PS,
        noise_hz_per_mw=NOISE_HZ_PER_MW,
        latency_ps=latency_ps,
    )


PHYSICS = PairSourcePhysics(
    pumps=(PumpPhysics(0, "laser0", 1550.12), PumpPhysics(10, "laser10", 1540.56)),
    tec="tec1",
    channels=(
        channel(4, "u0", "tdc1", 1, 5.0, 1200.0),
        channel(6, "u1", "tdc1", 2, 7.5, 300.0),
        channel(24, "u1", "tdc1", 3, 7.5, 0.0),
        channel(-4, "u2", "tdc2", 1, 12.0, 2500.0),
        channel(14, "u3", "tdc2", 2, 3.0, 0.0),
        channel(16, "u3", "tdc2", 3, 3.0, 700.0),
    ),
    users=(
        UserPhysics("u0", ("awg1", 1), RAD_PER_V, 0.0, 0.0),
        UserPhysics("u1", None, 0.0, 0.0, 0.0),
        UserPhysics("u2", None, 0.0, 0.0, 0.0),
        UserPhysics("u3", None, 0.0, 0.0, 0.0),
    ),
    reference_temperature_c=T_REF_C,
    linewidth_hz=LINEWIDTH_HZ,
)


def resonance_m(nm: float) -> float:
    return nm * 1e-9


class Bench:
    """Two lasers, a TEC, an AWG, two taggers and the source; drivers for the taggers."""

    def __init__(self, physics: PairSourcePhysics, *, keep_truth: bool = False, seed: int = 7):
        self.clock = VirtualClock(realtime=False)
        tdc = {"source": "pairs", "bin_width_ps": 1, "buffer_s": 1.0}
        specs = [
            SimSpec("laser0", "santec_tsl570"),
            SimSpec("laser10", "santec_tsl570"),
            SimSpec("tec1", "arroyo_5300", {"initial_temperature_c": T_REF_C}),
            SimSpec("awg1", "keysight_33500b"),
            SimSpec("tdc1", "idq_id1000", tdc),
            SimSpec("tdc2", "idq_id1000", {**tdc, **TDC2_CLOCK}),
        ]
        self.host = SimHost(
            specs,
            clock=self.clock,
            seed=seed,
            ambient_c=T_REF_C,  # the TEC stage sits at the reference temperature
            elements=[
                lambda bench: PhotonPairSource("pairs", bench, physics, keep_truth=keep_truth)
            ],
        )
        self.host.start()
        self.source: PhotonPairSource = self.host.bench.elements["pairs"]  # type: ignore[assignment]
        self.sims = self.host.sims
        self.taggers = {}
        for name in ("tdc1", "tdc2"):
            tagger = driver_class("idq_id1000")(name, self.host.resources[name], timeout_s=2.0)
            tagger.connect()
            self.taggers[name] = tagger
        awg = driver_class("keysight_33500b")("awg1", self.host.resources["awg1"], timeout_s=2.0)
        awg.connect()
        awg.function[1] = "DC"
        awg.output[1] = True
        self.awg = awg

    def lasers_on(self, *, settle_s: float = 1.0) -> None:
        """Both pumps on their resonances at 1 mW; wait for the diode turn-on."""
        for pump in PHYSICS.pumps:
            laser = self.sims[pump.laser]
            laser.wavelength_m = resonance_m(pump.resonance_nm)
            laser.process(b":POW:STAT 1")
        self.clock.advance(settle_s)

    def set_phase_sum(self, phi_rad: float) -> None:
        """phi_u0 through the AWG DC offset (u1..u3 sit at 0)."""
        self.awg.offset_v[1] = phi_rad / RAD_PER_V

    def local_now_ps(self, name: str) -> int:
        sim = self.sims[name]
        return sim.tagger_clock.to_local_ps(round(self.clock.now_s() * 1e12))

    def stream(self, seconds: float, names=("tdc1", "tdc2"), step_s: float = 0.05):
        """Advance in steps and read every final tag of each named tagger."""
        batches: dict[str, list[TagBatch]] = {name: [] for name in names}
        for _ in range(round(seconds / step_s)):
            self.clock.advance(step_s)
            for name in names:
                until = self.local_now_ps(name) - self.sims[name].holdback_ps
                batches[name].append(self.taggers[name].read_tags(10.0, until_ps=until))
        return {name: TagBatch.concatenate(b) for name, b in batches.items()}

    def settle(self, names=("tdc1", "tdc2")) -> None:
        """Let a change reach the generated blocks: read past two blocks and forget it."""
        self.stream(2 * PHYSICS.block_s + 0.01, names, step_s=0.01)

    def close(self) -> None:
        for tagger in self.taggers.values():
            tagger.close(safe=False)
        self.awg.close(safe=False)
        self.host.stop()


@pytest.fixture
def make_bench() -> Iterator:
    benches: list[Bench] = []

    def make(physics: PairSourcePhysics = PHYSICS, **kwargs) -> Bench:
        bench = Bench(physics, **kwargs)
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        bench.close()


def lorentzian(detuning_hz: float) -> float:
    return 1.0 / (1.0 + (2.0 * detuning_hz / LINEWIDTH_HZ) ** 2)


def within(observed: float, expected: float, sigmas: float = 5.0, extra: float = 0.0) -> bool:
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected, 1.0)) + extra


def registered(rate_hz: float) -> float:
    """Non-paralysable dead time: registered rate of a Poisson stream."""
    return rate_hz / (1.0 + rate_hz * DEAD_PS * 1e-12)


def coincidences(ta: np.ndarray, tb: np.ndarray, center_ps: float, half_ps: float) -> int:
    """Number of (a, b) with t_b - t_a in [center - half, center + half)."""
    hi = np.searchsorted(tb, ta + round(center_ps + half_ps))
    lo = np.searchsorted(tb, ta + round(center_ps - half_ps))
    return int(np.sum(hi - lo))


def matched_offsets(ta: np.ndarray, tb: np.ndarray, center_ps: float, half_ps: float):
    lo = np.searchsorted(tb, ta + round(center_ps - half_ps))
    hi = np.searchsorted(tb, ta + round(center_ps + half_ps))
    ok = hi > lo
    return tb[lo[ok]] - ta[ok]


# ---------------------------------------------------------------------------------------------
def test_pair_rate_follows_the_lorentzian_pump_detuning(make_bench):
    bench = make_bench()
    bench.lasers_on()
    src = bench.source
    full_deg, full_nd = PHYSICS.degenerate_hz_per_mw2, PHYSICS.nondegenerate_hz_per_mw2
    assert src.pump_power_in_ring_mw(0) == pytest.approx(1.0, rel=1e-4)
    assert abs(src.ring_detuning_hz(0)) < 1.0 and abs(src.ring_detuning_hz(10)) < 1.0
    assert src.pair_rate_hz(-4, 4) == pytest.approx(full_deg, rel=1e-4)
    assert src.pair_rate_hz(6, 4) == pytest.approx(full_nd, rel=1e-4)  # order does not matter
    assert src.pair_rate_hz(4, 24) == 0.0  # 28: not a process

    # detune pump 0 by half a linewidth (blue): a quarter of its degenerate pairs, half the
    # non-degenerate ones; pump 10's degenerate process is untouched
    nu0 = SPEED_OF_LIGHT_M_S / resonance_m(1550.12)
    bench.sims["laser0"].wavelength_m = SPEED_OF_LIGHT_M_S / (nu0 + LINEWIDTH_HZ / 2)
    assert src.ring_detuning_hz(0) == pytest.approx(LINEWIDTH_HZ / 2, rel=1e-6)
    assert src.pump_power_in_ring_mw(0) == pytest.approx(0.5, rel=1e-4)
    assert src.pair_rate_hz(-4, 4) == pytest.approx(full_deg / 4, rel=1e-4)
    assert src.pair_rate_hz(4, 6) == pytest.approx(full_nd / 2, rel=1e-4)
    assert src.pair_rate_hz(4, 16) == pytest.approx(full_deg, rel=1e-4)
    # any detuning: the closed form
    for detuning in (-3e8, -5e7, 2.5e7, 1e9):
        bench.sims["laser0"].wavelength_m = SPEED_OF_LIGHT_M_S / (nu0 + detuning)
        expected = full_deg * lorentzian(detuning) ** 2
        assert src.pair_rate_hz(-4, 4) == pytest.approx(expected, rel=1e-4)

    # the generated events follow: channel -4 (pairs of sum 0, 10, 20) counted over the
    # control link at detuning linewidth / 2
    bench.sims["laser0"].wavelength_m = SPEED_OF_LIGHT_M_S / (nu0 + LINEWIDTH_HZ / 2)
    tdc2 = bench.taggers["tdc2"]
    tdc2.counter_window_ms[1] = 200
    bench.clock.advance(0.45)  # windows [.., 0.2 s) and [0.2 s, 0.4 s) of local time complete
    expected_hz = registered(src.expected_singles_hz(-4))
    pairs_hz = (full_deg / 4 + full_deg + full_nd / 2) / 2 * ETA
    assert expected_hz == pytest.approx(registered(pairs_hz + NOISE_HZ_PER_MW * 1.5 + DARK_HZ))
    assert within(tdc2.counts[1], expected_hz * 0.2)


def test_pair_rate_follows_the_ring_temperature(make_bench):
    bench = make_bench()
    bench.lasers_on()
    src = bench.source
    full_deg, full_nd = PHYSICS.degenerate_hz_per_mw2, PHYSICS.nondegenerate_hz_per_mw2
    # warm the room (the TEC output is off: the stage follows it with tau = 10 s)
    d_t = 0.04
    bench.host.bench.ambient_c = T_REF_C + d_t
    bench.clock.advance(400.0)
    temperature = bench.sims["tec1"].temperature_c()
    assert temperature == pytest.approx(T_REF_C + d_t, abs=1e-9)
    shift_hz = PHYSICS.thermo_optic_hz_per_k * (temperature - T_REF_C)  # -100 MHz
    assert shift_hz == pytest.approx(-LINEWIDTH_HZ / 2, rel=1e-6)
    for label in (0, 10):  # both resonances moved away from the (fixed) lasers
        assert src.ring_detuning_hz(label) == pytest.approx(-shift_hz, rel=1e-6)
    assert src.pair_rate_hz(-4, 4) == pytest.approx(full_deg / 4, rel=1e-4)
    assert src.pair_rate_hz(4, 16) == pytest.approx(full_deg / 4, rel=1e-4)
    assert src.pair_rate_hz(4, 6) == pytest.approx(full_nd / 4, rel=1e-4)
    # pump 0 follows its resonance: full again; the non-degenerate process recovers half
    laser0 = bench.sims["laser0"]
    laser0.wavelength_m = SPEED_OF_LIGHT_M_S / (SPEED_OF_LIGHT_M_S / laser0.wavelength_m + shift_hz)
    assert abs(src.ring_detuning_hz(0)) < 1e3
    assert src.pair_rate_hz(-4, 4) == pytest.approx(full_deg, rel=1e-4)
    assert src.pair_rate_hz(4, 6) == pytest.approx(full_nd / 2, rel=1e-4)


def test_singles_over_the_data_socket_and_dead_time(make_bench):
    bench = make_bench()
    bench.lasers_on()
    for tagger in bench.taggers.values():
        tagger.start_stream()
    bench.settle()
    start = {name: bench.local_now_ps(name) for name in bench.taggers}
    tags = bench.stream(1.0)
    labels = {("tdc1", 1): 4, ("tdc1", 2): 6, ("tdc1", 3): 24}
    labels |= {("tdc2", 1): -4, ("tdc2", 2): 14, ("tdc2", 3): 16}
    for (name, inp), label in labels.items():
        batch = tags[name]
        times = batch.times_ps(inp)
        times = times[times >= start[name]]
        span_s = (batch.horizon_ps - start[name]) * 1e-12
        expected_hz = bench.source.expected_singles_hz(label)
        assert 50e3 < expected_hz < 150e3  # physics.md: 50-150 kHz per channel at ~1 mW
        expected = registered(expected_hz) * span_s
        assert within(times.size, expected), (label, times.size, expected)
        # dead time, from the stream: the tagger's jitter (5 sigma clip) and bins only
        gaps = np.diff(times)
        slack = 2 * math.ceil(5 * bench.sims[name].tagger_jitter_ps) + 2
        assert gaps.min() >= DEAD_PS - slack
        assert gaps.min() < DEAD_PS + 5_000  # the dead time does bite
    assert tags["tdc1"].times_ps(4).size == 0 and tags["tdc1"].lost_events == 0


def test_dark_counts_only_with_the_lasers_off(make_bench):
    bench = make_bench()  # lasers never switched on
    for tagger in bench.taggers.values():
        tagger.start_stream()
    bench.settle()
    start = {name: bench.local_now_ps(name) for name in bench.taggers}
    tags = bench.stream(4.0, step_s=0.2)
    for name in ("tdc1", "tdc2"):
        span_s = (tags[name].horizon_ps - start[name]) * 1e-12
        for inp in (1, 2, 3):
            times = tags[name].times_ps(inp)
            n = int(np.count_nonzero(times >= start[name]))
            assert within(n, DARK_HZ * span_s), (name, inp, n)
        assert tags[name].times_ps(4).size == 0  # nothing on the unused input
    assert bench.source.expected_singles_hz(4) == DARK_HZ


def test_franson_peaks_and_interference_on_one_tagger(make_bench):
    bench = make_bench()
    bench.lasers_on()
    src = bench.source
    tdc1 = bench.taggers["tdc1"]
    tdc1.start_stream()
    center = src.channel_latency_ps(6) - src.channel_latency_ps(4)
    delay = PHYSICS.interferometer_delay_ps
    half = 150.0
    rate_both = src.pair_rate_hz(4, 6) * ETA * ETA
    vis = PHYSICS.franson_visibility

    def measure(phi: float, seconds: float):
        bench.set_phase_sum(phi)
        bench.settle(("tdc1",))
        assert src.user_phase_rad("u0", bench.clock.now_s() + 0.005) == pytest.approx(phi)
        start = bench.local_now_ps("tdc1")
        tags = bench.stream(seconds, ("tdc1",))["tdc1"]
        t4, t6 = tags.times_ps(1), tags.times_ps(2)
        t4, t6 = t4[t4 >= start], t6[t6 >= start]
        span_s = (tags.horizon_ps - start) * 1e-12
        accidental = t4.size * t6.size / span_s * 2 * half * 1e-12
        return t4, t6, span_s, accidental

    # phase sum pi/2 (cos = 0): the central peak is twice each side peak, as on average
    t4, t6, span_s, acc = measure(math.pi / 2, 1.5)
    central = coincidences(t4, t6, center, half)
    early, late = (coincidences(t4, t6, center + s * delay, half) for s in (-1, 1))
    assert within(central, rate_both / 8 * span_s + acc)
    for side in (early, late):
        assert within(side, rate_both / 16 * span_s + acc)
    offsets = matched_offsets(t4, t6, center, half)
    assert abs(np.median(offsets) - center) <= 3.0  # at latency(6) - latency(4)
    assert 30 <= np.std(offsets) <= 45  # 2 x 25 ps SNSPD + 2 x 3 ps tagger jitter: 36 ps
    assert coincidences(t4, t6, center + 5 * delay, half) <= acc + 5 * math.sqrt(acc + 1)

    # 1 + V cos(phi): phi = 0 and phi = pi, accidentals included
    counts = {}
    for phi in (0.0, math.pi):
        t4, t6, span_s, acc = measure(phi, 1.5)
        counts[phi] = coincidences(t4, t6, center, half)
        expected = rate_both * (1 + vis * math.cos(phi)) / 8 * span_s + acc
        assert within(counts[phi], expected), (phi, counts[phi], expected)
        side = coincidences(t4, t6, center + delay, half)
        assert within(side, rate_both / 16 * span_s + acc)  # side peaks do not interfere
    raw_visibility = (counts[0.0] - counts[math.pi]) / (counts[0.0] + counts[math.pi])
    assert 0.93 < raw_visibility < 0.99


def test_tagger_clock_is_exactly_invertible():
    from drivers.sim.idq_id1000 import TaggerClock

    clock = TaggerClock(**{k.removeprefix("clock_"): v for k, v in TDC2_CLOCK.items()})
    rng = np.random.default_rng(3)
    true_ps = np.sort(rng.integers(0, 10**14, 200_000))  # 100 s
    local = clock.to_local_ps(true_ps)
    assert np.all(np.diff(local) >= 0)
    assert np.max(np.abs(clock.to_true_ps(local) - true_ps)) <= 1
    back = clock.to_true_ps(local)
    assert np.all(clock.to_local_ps(back) >= local) and np.all(clock.to_local_ps(back - 1) < local)
    t = 10**14
    d, r = 15e-6, 0.3e-6 * 1e-12
    assert clock.to_local_ps(t) == pytest.approx(0.05e12 + t * (1 + d) + 0.5 * r * t * t, abs=1)
    assert clock.drift_ppm(100.0) == pytest.approx(15.0 + 0.3 * 100)
    assert isinstance(clock.to_true_ps(12345), int)
    assert TaggerClock().to_local_ps(987654321) == 987654321


def test_two_taggers_drifting_clocks_and_the_truth_log(make_bench):
    physics = replace(
        PHYSICS, users=(*PHYSICS.users[:3], replace(PHYSICS.users[3], drift_rad2_per_s=0.5))
    )
    bench = make_bench(physics, keep_truth=True)
    bench.lasers_on()
    src = bench.source
    clock2 = bench.sims["tdc2"].tagger_clock
    for tagger in bench.taggers.values():
        tagger.start_stream()
    bench.settle()
    start_true_ps = round(bench.clock.now_s() * 1e12) + 10**6
    tags = bench.stream(1.5)
    end_true_ps = min(tags["tdc1"].horizon_ps, clock2.to_true_ps(tags["tdc2"].horizon_ps))
    end_true_ps -= 10**6
    assert bench.sims["tdc1"].tagger_clock.is_identity  # tdc1 runs on true time

    def true_times(name: str, inp: int) -> np.ndarray:
        times = tags[name].times_ps(inp)
        if name == "tdc2":
            times = clock2.to_true_ps(times)
        return times[(times >= start_true_ps) & (times < end_true_ps)]

    # cross-tagger pair (4, -4): the tdc2 times mapped back put the peak at the latencies
    t4, tm4 = true_times("tdc1", 1), true_times("tdc2", 1)
    center = src.channel_latency_ps(-4) - src.channel_latency_ps(4)
    offsets = matched_offsets(t4, tm4, center, 150)
    span_s = (end_true_ps - start_true_ps) * 1e-12
    rate_central = src.pair_rate_hz(4, -4) * ETA * ETA * (1 + PHYSICS.franson_visibility) / 8
    assert within(offsets.size, rate_central * span_s)
    assert abs(np.median(offsets) - center) <= 3.0
    # unmapped, tdc2's local times are 50 ms plus the drift away: accidentals only there
    raw = tags["tdc2"].times_ps(1)
    acc = t4.size * tm4.size / span_s * 300e-12
    assert coincidences(t4, raw, center, 150) <= acc + 5 * math.sqrt(acc) < 0.1 * offsets.size

    # truth: singles registered per channel = what each stream shows (emission span shifted
    # by the channel latency; the long arm and jitter can move an edge event only)
    labels = {4: ("tdc1", 1), 6: ("tdc1", 2), 24: ("tdc1", 3)}
    labels |= {-4: ("tdc2", 1), 14: ("tdc2", 2), 16: ("tdc2", 3)}
    for label, (name, inp) in labels.items():
        lat_s = src.channel_latency_ps(label) * 1e-12
        truth = src.truth_singles(label, start_true_ps * 1e-12 - lat_s, end_true_ps * 1e-12 - lat_s)
        assert abs(truth - true_times(name, inp).size) <= 2, label

    # truth pairs: every pair with both photons registered is in the streams, both taggers'
    # and one tagger's; the streams add only accidentals
    t0_s = start_true_ps * 1e-12 - src.channel_latency_ps(4) * 1e-12
    t1_s = end_true_ps * 1e-12 - src.channel_latency_ps(4) * 1e-12
    for x, y, tx, ty in ((4, -4, t4, tm4), (4, 6, t4, true_times("tdc1", 2))):
        dt = src.truth_pair_dt_ps(x, y, t0_s, t1_s)
        assert np.array_equal(-src.truth_pair_dt_ps(y, x, t0_s, t1_s), dt)
        center = src.channel_latency_ps(y) - src.channel_latency_ps(x)
        for shift in (-PHYSICS.interferometer_delay_ps, 0.0, PHYSICS.interferometer_delay_ps):
            lo, hi = center + shift - 150, center + shift + 150
            n_truth = int(np.count_nonzero((dt >= lo) & (dt < hi)))
            n_stream = coincidences(tx, ty, center + shift, 150)
            acc = tx.size * ty.size / span_s * 300e-12
            assert n_truth > 50
            assert -3 <= n_stream - n_truth <= acc + 5 * math.sqrt(acc) + 3, (x, y, shift)
        # every class, both at port "+": R eta^2 (2 + V cos(phi)) / 8 (phi = 0 here), less
        # the dead time's small loss
        expected = src.pair_rate_hz(x, y) * ETA**2 * (2 + PHYSICS.franson_visibility) / 8
        assert within(dt.size, registered(expected) * span_s * (1 - 2 * 110e3 * DEAD_PS * 1e-12))


def test_the_realisation_is_deterministic(make_bench):
    bench = make_bench()
    bench.lasers_on()
    src = bench.source
    t0 = round(bench.clock.now_s() * 1e12)
    t1 = t0 + 35 * 10**9  # 35 ms: four blocks, cut anywhere
    whole = src.generate_for("tdc1", t0, t1)
    cuts = [t0, t0 + 1, t0 + 7_777_777_777, t0 + 20 * 10**9, t1]
    parts = [src.generate_for("tdc1", a, b) for a, b in itertools.pairwise(cuts)]
    joined = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    for got in (joined, src.generate_for("tdc1", t0, t1)):
        order_a, order_b = np.argsort(whole[1], kind="stable"), np.argsort(got[1], kind="stable")
        assert np.array_equal(whole[1][order_a], got[1][order_b])
        assert np.array_equal(whole[0][order_a], got[0][order_b])
    assert whole[0].dtype == np.uint8 and whole[1].dtype == np.int64
    assert set(whole[0].tolist()) == {1, 2, 3}
    assert src.max_latency_ps > max(src.channel_latency_ps(c.label) for c in PHYSICS.channels)
    # a second source of the same name on the same bench draws the same realisation
    twin = PhotonPairSource("pairs", bench.host.bench, PHYSICS)
    again = twin.generate_for("tdc1", t0, t1)
    assert np.array_equal(np.sort(again[1]), np.sort(whole[1]))
    # a different name is a different realisation
    other = PhotonPairSource("other", bench.host.bench, PHYSICS).generate_for("tdc1", t0, t1)
    assert not np.array_equal(np.sort(other[1])[:100], np.sort(whole[1])[:100])
    # blocks evicted from the cache are regenerated with the conditions they were first
    # generated with, not today's: detune pump 0, push the first blocks out, ask again
    bench.sims["laser0"].wavelength_m *= 1.000001
    twin.generate_for("tdc1", t1, t1 + 3 * 10**12)  # 300 more blocks: beyond the LRU cache
    regenerated = twin.generate_for("tdc1", t0, t1)
    assert np.array_equal(np.sort(regenerated[1]), np.sort(whole[1]))
    # every detection comes at least the constant latency after the start
    assert whole[1].min() >= t0 + CONSTANT_LATENCY_PS - 5 * 25


# -- interferometer reference light: I and Q photodiodes for the phase locks -----------------
@pytest.fixture
def reference_bench() -> Iterator[SimHost]:
    """Lasers, TEC, the phase-shifter AWG, a scope on u0's I, Q and u1's I, and the source
    (u0's phase random-walks, so the phase changes from block to block)."""
    physics = replace(
        PHYSICS, users=(replace(PHYSICS.users[0], drift_rad2_per_s=2.0), *PHYSICS.users[1:])
    )
    host = SimHost(
        [
            SimSpec("laser0", "santec_tsl570"),
            SimSpec("laser10", "santec_tsl570"),
            SimSpec("tec1", "arroyo_5300", {"initial_temperature_c": T_REF_C}),
            SimSpec("awg1", "keysight_33500b"),
            SimSpec("scope1", "keysight_infiniium", {"noise_v": 1e-3}),
        ],
        clock=VirtualClock(realtime=False),
        seed=5,
        ambient_c=T_REF_C,
        wiring={"scope1:1": "pairs:1", "scope1:2": "pairs:2", "scope1:3": "pairs:3"},
        elements=[lambda bench: PhotonPairSource("pairs", bench, physics)],
    )
    host.start()
    awg = host.sims["awg1"].channels[1]
    awg.function, awg.offset_v, awg.output = "DC", 0.4, True  # u0: 0.2 pi from the shifter
    yield host
    host.stop()


def reference_v(phase_rad: np.ndarray, quadrature: str) -> np.ndarray:
    swing = PHYSICS.reference_amplitude_v * PHYSICS.reference_visibility
    wave = np.cos(phase_rad) if quadrature == "I" else np.sin(phase_rad)
    return PHYSICS.reference_dc_v + swing * wave


def test_reference_outputs_follow_each_users_phase_block_by_block(reference_bench):
    src: PhotonPairSource = reference_bench.bench.elements["pairs"]  # type: ignore[assignment]
    t_s = np.linspace(0.0, 0.095, 400)  # ten 10 ms blocks
    phases = np.array([src.user_phase_rad("u0", t) for t in t_s])
    assert np.ptp(phases) > 0.1  # the walk moves the phase between blocks
    np.testing.assert_allclose(src.user_phases_rad("u0", t_s), phases, rtol=0, atol=1e-12)
    np.testing.assert_allclose(src.output_v(1, t_s), reference_v(phases, "I"), atol=1e-12)
    np.testing.assert_allclose(src.output_v(2, t_s), reference_v(phases, "Q"), atol=1e-12)
    u1 = np.array([src.user_phase_rad("u1", t) for t in t_s])  # u1: fixed at 0 rad
    np.testing.assert_allclose(src.output_v(3, t_s), reference_v(u1, "I"), atol=1e-12)
    assert src.output_v(8, t_s[:3]).shape == (3,)  # u3's Q: the last output
    for bad in (0, 9):
        with pytest.raises(ValueError, match=r"outputs 1\.\.8 are the I, Q reference"):
            src.output_v(bad, t_s)

    # a block already generated keeps the phase its photons saw; later blocks see the change
    t0_ps, t1_ps = 200 * 10**9, 220 * 10**9  # blocks 20 and 21
    src.generate_for("tdc1", t0_ps, t1_ps)
    before = src.user_phases_rad("u0", np.array([0.205, 0.215, 0.225]))
    reference_bench.sims["awg1"].channels[1].offset_v = 1.4  # +0.5 pi
    after = src.user_phases_rad("u0", np.array([0.205, 0.215, 0.225]))
    np.testing.assert_array_equal(after[:2], before[:2])
    assert after[2] - before[2] == pytest.approx(RAD_PER_V * 1.0, abs=1e-12)


def test_scope_reads_the_reference_fringe_in_quadrature(reference_bench):
    scope = driver_class("keysight_infiniium")(
        "scope1", reference_bench.resources["scope1"], timeout_s=2.0
    )
    scope.connect()
    try:
        sim = reference_bench.sims["scope1"]
        src: PhotonPairSource = reference_bench.bench.elements["pairs"]  # type: ignore[assignment]
        scope.sample_rate_hz = 1e5
        scope.record_length = 5000  # 50 ms: five blocks of the walk
        waves = scope.acquire([1, 2])
        t_start, dt, n = sim.last_acquisition
        t_s = t_start + np.arange(n) * dt
        lsb = sim.volts_per_adc_level(1)
        for channel, quadrature in ((1, "I"), (2, "Q")):
            truth = reference_v(src.user_phases_rad("u0", t_s), quadrature)
            assert np.max(np.abs(waves[channel].volts - truth)) < lsb / 2 + 6e-3
        # the phase a lock would compute from the two photodiodes
        dc = PHYSICS.reference_dc_v
        phase = np.arctan2(waves[2].volts - dc, waves[1].volts - dc)
        wrapped = np.angle(np.exp(1j * (phase - src.user_phases_rad("u0", t_s))))
        assert np.sqrt(np.mean(wrapped**2)) < 0.05  # 1 mV noise on a 0.14 V swing
        # the cheap reading for a slow loop: the mean of the window ending now
        now_s = reference_bench.bench.clock.now_s()
        rate, points = sim.effective_acquisition()
        window_s = now_s - np.arange(points - 1, -1, -1) / rate
        truth_mean = float(np.mean(reference_v(src.user_phases_rad("u0", window_s), "I")))
        assert scope.mean_voltage_v(1) == pytest.approx(truth_mean, abs=lsb / 2 + 1e-4)
    finally:
        scope.close()


# -- interferometer phases from the drift model, driven by the bench's room ------------------
MODEL_SEED = 7
ROOM = {"profile": "typical_lab"}  # HVAC +-0.3 degC every 10 min and a slow drift
#: u0 (shifter on awg1:1), u1 and u2 drift with the model; u3 keeps the random walk
MODEL_PHYSICS = replace(
    PHYSICS,
    users=(
        UserPhysics("u0", ("awg1", 1), RAD_PER_V, 0.25, 0.0, phase_drift="model"),
        UserPhysics("u1", None, 0.0, -0.5, 0.0, phase_drift="model"),
        UserPhysics("u2", None, 0.0, 0.0, 0.0, phase_drift="model"),
        UserPhysics("u3", None, 0.0, 0.0, 1e-3),
    ),
)


@pytest.fixture(scope="module")
def model_host() -> Iterator[SimHost]:
    """The source on a bench with a moving room; u0's shifter at 0.4 V set over the socket."""
    host = SimHost(
        [
            SimSpec("laser0", "santec_tsl570"),
            SimSpec("laser10", "santec_tsl570"),
            SimSpec("tec1", "arroyo_5300", {"initial_temperature_c": T_REF_C}),
            SimSpec("awg1", "keysight_33500b"),
        ],
        clock=VirtualClock(realtime=False),
        seed=MODEL_SEED,
        environment=ROOM,
        elements=[lambda bench: PhotonPairSource("pairs", bench, MODEL_PHYSICS)],
    )
    host.start()
    awg = driver_class("keysight_33500b")("awg1", host.resources["awg1"], timeout_s=2.0)
    awg.connect()
    awg.function[1] = "DC"
    awg.offset_v[1] = 0.4
    awg.output[1] = True
    awg.close(safe=False)
    yield host
    host.stop()


def reference_drift(
    bench: BenchModel, user_index: int, ticks: int, *, name: str = "pairs", params=None
) -> np.ndarray:
    """D(i) - D(0) at ticks i = 0..ticks-1 (1 s apart) of an independent DriftProcess seeded
    as the module docstring says, with the bench's room as its air."""
    seed = (bench.seed & 0xFFFFFFFF, zlib.crc32(name.encode()), USER_DRIFT_SEED_TAG, user_index)
    proc = DriftProcess(
        params or DriftParams(), seed=seed, start_s=-1.0, air_c=bench.environment.ambient_c
    )
    trace = proc.advance(ticks)
    np.testing.assert_allclose(trace.t_s, np.arange(ticks, dtype=np.float64), atol=1e-9)
    return trace.phase_rad - trace.phase_rad[0]


def expected_w(reference: np.ndarray, k: np.ndarray) -> np.ndarray:
    """W at the starts of blocks k: the reference ticks interpolated (numpy.interp), 0 for
    k <= 0."""
    t_s = np.asarray(k, dtype=np.float64) * PHYSICS.block_s
    w = np.interp(t_s, np.arange(reference.size, dtype=np.float64), reference)
    return np.where(np.asarray(k) > 0, w, 0.0)


def test_model_phase_is_the_drift_model_of_the_room(model_host):
    """phi_U(t) = offset + rad_per_v V + (D(t_k) - D(0)) with D an independent DriftProcess on
    the same seed and the same room, t_k the start of t's 10 ms block."""
    src: PhotonPairSource = model_host.bench.elements["pairs"]  # type: ignore[assignment]
    reference = reference_drift(model_host.bench, 0, 2 * 3600 + 2)
    k = np.array([-3, 0, 1, 99, 100, 101, 4321, 60_000, 360_017, 719_999], dtype=np.int64)
    t_s = (k + 0.5) * PHYSICS.block_s  # mid-block: the phase of the block's start
    expected = 0.25 + RAD_PER_V * 0.4 + expected_w(reference, k)
    got = np.array([src.user_phase_rad("u0", float(t)) for t in t_s])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(src.user_phases_rad("u0", t_s), expected, rtol=0, atol=1e-9)
    # the model really moves over two hours (room drift and HVAC through the enclosure lag)
    assert np.ptp(reference) > 0.1
    # a block generated now keeps that phase (its photons saw it)
    k_gen = 1_234
    src.generate_for("tdc1", k_gen * 10**10, (k_gen + 1) * 10**10)
    t_gen = (k_gen + 0.25) * PHYSICS.block_s
    assert src.user_phase_rad("u0", t_gen) == pytest.approx(
        0.25 + RAD_PER_V * 0.4 + float(expected_w(reference, np.array([k_gen]))[0]), abs=1e-9
    )
    # u1 (no shifter): offset + its own drift, seeded by its index
    ref_u1 = reference_drift(model_host.bench, 1, 3602)
    np.testing.assert_allclose(
        src.user_phases_rad("u1", t_s[k < 360_000]),
        -0.5 + expected_w(ref_u1, k[k < 360_000]),
        rtol=0,
        atol=1e-9,
    )


_U1_REFERENCE: dict[int, np.ndarray] = {}


def _u1_reference(bench: BenchModel) -> np.ndarray:
    """u1's reference ticks over 5000 s on ``bench`` (computed once per bench)."""
    if id(bench) not in _U1_REFERENCE:
        _U1_REFERENCE[id(bench)] = reference_drift(bench, 1, 5_002)
    return _U1_REFERENCE[id(bench)]


@settings(max_examples=20, deadline=None)
@given(ks=st.lists(st.integers(-10, 500_000), min_size=1, max_size=12))
def test_model_phase_does_not_depend_on_the_order_of_the_questions(model_host, ks):
    """A fresh source asked for blocks in any order (late first, past and future) answers
    what the reference says for every block."""
    src = PhotonPairSource("pairs", model_host.bench, MODEL_PHYSICS)
    k = np.array(ks, dtype=np.int64)
    got = np.array([src.user_phase_rad("u1", (kk + 0.5) * PHYSICS.block_s) for kk in ks])
    np.testing.assert_allclose(
        got, -0.5 + expected_w(_u1_reference(model_host.bench), k), atol=1e-9
    )


def test_model_phase_same_seed_same_realisation_other_name_or_user_another():
    t_s = np.linspace(0.0, 1800.0, 97)

    def phases(seed: int, name: str, user: str, physics=MODEL_PHYSICS) -> np.ndarray:
        bench = BenchModel(clock=VirtualClock(realtime=False), seed=seed, environment=ROOM)
        return PhotonPairSource(name, bench, physics).user_phases_rad(user, t_s)

    base = phases(MODEL_SEED, "pairs", "u1")
    np.testing.assert_array_equal(phases(MODEL_SEED, "pairs", "u1"), base)
    for other in (phases(MODEL_SEED + 1, "pairs", "u1"), phases(MODEL_SEED, "ring", "u1")):
        assert np.max(np.abs(other - base)) > 1e-3
    # u2 has the same offset as u1 would at 0 but its own stream
    assert np.max(np.abs(phases(MODEL_SEED, "pairs", "u2") - (base + 0.5))) > 1e-3
    # the random-walk user walks as it does when nobody uses the model
    walkers = replace(PHYSICS, users=(*PHYSICS.users[:3], MODEL_PHYSICS.users[3]))
    walk = phases(MODEL_SEED, "pairs", "u3", walkers)
    assert np.ptp(walk) > 0.1
    np.testing.assert_array_equal(phases(MODEL_SEED, "pairs", "u3"), walk)


def test_model_phase_follows_a_step_of_the_room_through_the_enclosure_lag():
    """A quiet room at 25 degC warming by 1 degC from t = 100.5 s (so the tick at 101 s is the
    first warm one), every random source off: W = k (1 - exp(-(t - 100 s) / tau)) at whole
    seconds after the step, 0 before (the model's exact discretisation of the lag)."""
    quiet = DriftParams(
        thermal_lag_s=60.0,
        random_walk_rad2_per_s=0.0,
        burst_rate_per_hour=0.0,
        pump_power_rel_std=0.0,
    )
    user = UserPhysics("u1", None, 0.0, 0.0, 0.0, phase_drift="model", drift=quiet)
    physics = replace(MODEL_PHYSICS, users=(MODEL_PHYSICS.users[0], user, *MODEL_PHYSICS.users[2:]))
    bench = BenchModel(
        clock=VirtualClock(realtime=False),
        seed=3,
        ambient_c=25.0,
        environment={"steps": [[100.5, 1.0]]},
    )
    src = PhotonPairSource("pairs", bench, physics)
    t_s = np.array([0.0, 50.0, 100.0, 101.0, 130.0, 160.0, 400.0])
    got = src.user_phases_rad("u1", t_s + 0.005)  # inside the block that starts at t_s
    expected = quiet.phase_per_kelvin_rad * -np.expm1(-np.maximum(t_s - 100.0, 0.0) / 60.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"phase_drift": "brownian"}, "phase_drift 'brownian'"),
        ({"phase_drift": "model", "drift_rad2_per_s": 1e-3}, "ambiguous"),
        ({"phase_drift": "random_walk", "drift": DriftParams()}, "phase_drift 'model' only"),
    ],
)
def test_bad_drift_choice_is_refused_naming_the_user(change, problem):
    users = (replace(MODEL_PHYSICS.users[0], **change), *MODEL_PHYSICS.users[1:])
    bench = BenchModel(clock=VirtualClock(realtime=False), seed=1)
    with pytest.raises(ValueError, match="user u0") as info:
        PhotonPairSource("pairs", bench, replace(MODEL_PHYSICS, users=users))
    assert problem in str(info.value)
