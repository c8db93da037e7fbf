"""The ISAQN twin at the reference build's rates (configs/isaqn_reference.toml), offline.

Carriers 100/200/300 MHz at 50 MBd, sampled at 1 GS/s, node I/Q from Keysight M8190As: the
same chain as tests/test_isaqn_twin.py (waveforms uploaded over the real transports, scope
records read over its socket, the twin only propagates light) on a manual virtual clock, so
records are contiguous and nothing waits for the wall clock. A record is 2**20 samples
(1.05 ms); the data span checked is a few records, so the phase checks use what such a span
holds: node 1's 1 kHz PZT tone (tens of rad) and the 100 Hz laser's phase noise seen through
the 2 x 49 us round trip (~0.25 rad rms) on the quiet nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from dsp.cvqkd import PeSums, estimate_from_sums
from labctl.bench import Bench
from labctl.config import CONFIG_DIR, load_bench
from labctl.isaqn_pipeline import IsaqnReceiver, awg_waveform, node_sequence

REFERENCE_BENCH = CONFIG_DIR / "isaqn_reference.toml"
#: data records after the synchronisation record (each 2**20 samples, 52 429 symbols)
DATA_RECORDS = 4


@pytest.fixture(scope="module")
def run():
    """Upload, calibrate, synchronise and stream 1 + DATA_RECORDS records (5.2 ms)."""
    config = load_bench(REFERENCE_BENCH)
    iq = config.isaqn
    assert iq is not None and iq.sim is not None
    clock = VirtualClock(realtime=False)
    with Bench(config, clock=clock) as bench:
        bench.connect()
        bench.apply_safe_start()
        ins = bench.instruments
        scope = ins[iq.scope]
        scope.apply({"sample_rate_hz": iq.sample_rate_hz, "record_length": iq.record_length})
        for ch in (iq.channel_i, iq.channel_q):
            scope.set("channel_scale_v_per_div", iq.scope_scale_v_per_div, ch)
        sequences = [node_sequence(n, config.seed, k) for k, n in enumerate(iq.nodes)]
        amplitudes = []
        for k, seq in enumerate(sequences):
            wave = awg_waveform(seq, iq.sample_rate_hz, iq.rolloff, iq.pulse_span_symbols)
            amplitudes.append(wave.amplitude_vpp)
            node = seq.node
            for port, data in ((node.awg_i, wave.i_norm), (node.awg_q, wave.q_norm)):
                awg = ins[port[0]]
                awg.upload_arb(port[1], f"N{k}{port[1]}", data, wave.sample_rate_hz)
                awg.set("amplitude_vpp", wave.amplitude_vpp, port[1])
        pzt = iq.nodes[0]
        drive = pzt.pzt_drive
        assert pzt.pzt is not None and drive is not None
        ins[pzt.pzt[0]].apply(
            {
                f"function.{pzt.pzt[1]}": drive.function,
                f"frequency_hz.{pzt.pzt[1]}": drive.freq_hz,
                f"amplitude_vpp.{pzt.pzt[1]}": drive.amplitude_vpp,
            }
        )

        def record() -> np.ndarray:
            waves = scope.acquire([iq.channel_i, iq.channel_q])
            assert not scope.overloaded(iq.channel_i) and not scope.overloaded(iq.channel_q)
            return waves[iq.channel_i].volts + 1j * waves[iq.channel_q].volts

        rx = IsaqnReceiver(iq, sequences)
        electronic = [record() for _ in range(iq.calibration_records)]
        ins[iq.laser].set("emission", True)
        clock.advance(0.5)  # laser turn-on (tau 50 ms)
        shot = [record() for _ in range(iq.calibration_records)]
        for seq in sequences:
            for port in (seq.node.awg_i, seq.node.awg_q):
                ins[port[0]].output_on(port[1])
        ins[pzt.pzt[0]].output_on(pzt.pzt[1])
        rx.calibrate(electronic, shot)
        first = record()
        t0_s = bench.sim_host.sims[iq.scope].last_acquisition[0]
        syncs = rx.synchronise(first, t0_s)
        results = [rx.process(first)]
        for _ in range(DATA_RECORDS):
            results.append(rx.process(record()))
        awg_state = {
            name: bench.sim_host.sims[name].snapshot()
            for name in {p[0] for n in iq.nodes for p in (n.awg_i, n.awg_q)}
        }
        net = bench.sim_host.bench.elements[iq.icr]
        yield {
            "config": config,
            "rx": rx,
            "syncs": syncs,
            "results": results,
            "net": net,
            "t0_s": t0_s,
            "amplitudes": amplitudes,
            "awg_state": awg_state,
        }


def test_m8190a_drives_inside_their_limits(run):
    """The drive amplitudes land inside the file's (and the model's) 0.35..0.7 Vpp; the
    M8190As play the uploaded segments at 1 GSa/s in 14-bit mode."""
    cfg = run["config"]
    iq = cfg.isaqn
    for amplitude, node in zip(run["amplitudes"], iq.nodes, strict=True):
        for port in (node.awg_i, node.awg_q):
            low, high = cfg.instruments[port[0]].limits["amplitude_vpp"]
            assert low >= 0.35 and high <= 0.7  # the model's direct DAC output range
            assert low < amplitude < high, (node.name, amplitude)
            ch = run["awg_state"][port[0]]["channels"][port[1]]
            assert ch["amplitude_v"] == pytest.approx(amplitude)
            assert ch["mode"] == "WPR" and ch["running"] and ch["output"]
            sps = round(iq.sample_rate_hz / node.symbol_rate_hz)
            assert ch["segments"][ch["selected"]]["length"] == node.sequence_symbols * sps
    for state in run["awg_state"].values():
        assert state["sample_rate"] == iq.sample_rate_hz


def test_every_band_locks_at_the_twin_delays(run):
    net, rx = run["net"], run["rx"]
    fs = rx.fs_hz
    assert rx.sps == 20
    for k, sync in enumerate(run["syncs"]):
        # the AWG centres symbol m on m / R; it reaches the scope tau later, and the stream
        # starts at the first record's t0: centres at t0 + (delay + m sps) / fs
        truth = ((net.fibre_delay_s(k) - run["t0_s"]) * fs) % rx.sps
        err = (sync.delay_samples - truth + rx.sps / 2) % rx.sps - rx.sps / 2
        assert abs(err) < 0.1, (k, sync.delay_samples, truth)
        assert sync.peak_to_sidelobe > 10, (k, sync.peak_to_sidelobe)
    for res in run["results"]:
        assert all(res.bands[b].locked for b in range(3))
        assert not res.resynchronised


def test_transmittance_inside_its_interval(run):
    cfg, rx, net = run["config"], run["rx"], run["net"]
    for b in range(3):
        sums = PeSums()
        for res in run["results"][1:]:
            sums = sums + res.bands[b].pe
        est = estimate_from_sums(sums, cfg.isaqn.eta, rx.calibration[b].v_el_snu, 0.999)
        truth = net.transmittance(b)
        # 4 records of ~39 300 quantum symbols: sigma(T)/T ~ 0.8 %; the truth must sit inside
        # the 99.9 % interval
        assert est.transmittance_ci[0] < truth < est.transmittance_ci[1], (b, est)
        assert est.transmittance == pytest.approx(truth, rel=0.03), b


def _pilot_phase(run, b: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.concatenate([r.bands[b].pilot_t_s for r in run["results"]])
    phase = np.concatenate([r.bands[b].pilot_phase_rad for r in run["results"]])
    return t, phase


def test_pilot_phase_tracks_the_pzt_tone(run):
    """Node 1: 1 kHz, 20 rad peak on the PZT; every pilot (12.5 MHz) follows the truth."""
    net = run["net"]
    t, phase = _pilot_phase(run, 0)
    truth = net.phase_rad(0, t)
    assert np.ptp(truth) > 30  # 5 periods of +-20 rad in the span
    corr = np.corrcoef(phase - phase.mean(), truth - truth.mean())[0, 1]
    assert corr > 0.999
    # no cycle slips: the difference is a constant (the carrier phase offset) plus noise
    diff = phase - truth
    assert np.ptp(diff - np.median(diff)) < 1.5


@pytest.mark.parametrize("b", [1, 2])
def test_pilot_phase_tracks_the_laser_phase_noise(run, b):
    """Quiet nodes: the phase is the 100 Hz laser's noise through the round trip (~0.25 rad
    rms, correlated over ~100 us) plus a negligible drift. Per pilot the estimate's own noise
    (~0.08 rad) is comparable, so the pilots are compared in 20 us means (256 pilots)."""
    net = run["net"]
    t, phase = _pilot_phase(run, b)
    truth = net.phase_rad(b, t)
    diff = phase - truth
    assert np.ptp(diff - np.median(diff)) < 1.5  # no cycle slip
    n = (t.size // 256) * 256
    mean_phase = phase[:n].reshape(-1, 256).mean(axis=1)
    mean_truth = truth[:n].reshape(-1, 256).mean(axis=1)
    assert np.std(mean_truth) > 0.05  # there is something to track
    corr = np.corrcoef(mean_phase - mean_phase.mean(), mean_truth - mean_truth.mean())[0, 1]
    assert corr > 0.99, corr
