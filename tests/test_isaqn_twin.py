"""The ISAQN twin driven through the instruments, received by the ISAQN pipeline.

Everything goes over the real transports: waveforms uploaded to the simulated 33500Bs, the
scope's records read over its socket; the twin (drivers/sim/isaqn.py) only propagates light.
The virtual clock is manual, so consecutive records are contiguous and nothing sleeps.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from dsp.cvqkd import PeSums, estimate_from_sums
from labctl.bench import Bench
from labctl.config import CONFIG_DIR, load_bench
from labctl.isaqn_pipeline import IsaqnReceiver, awg_waveform, node_sequence

ISAQN_BENCH = CONFIG_DIR / "isaqn_sim.toml"


@pytest.fixture(scope="module")
def run():
    """Upload, calibrate, synchronise and stream 12 records (1.2 s) of the shipped bench."""
    config = load_bench(ISAQN_BENCH)
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
        for k, seq in enumerate(sequences):
            wave = awg_waveform(seq, iq.sample_rate_hz, iq.rolloff, iq.pulse_span_symbols)
            node = seq.node
            for port, data in ((node.awg_i, wave.i_norm), (node.awg_q, wave.q_norm)):
                awg = ins[port[0]]
                awg.upload_arb(port[1], f"N{k}{port[1]}", data, wave.sample_rate_hz)
                awg.set("amplitude_vpp", wave.amplitude_vpp, port[1])
        pzt = iq.nodes[0]
        ins[pzt.pzt[0]].apply(
            {
                f"function.{pzt.pzt[1]}": "SIN",
                f"frequency_hz.{pzt.pzt[1]}": 5.0,
                f"amplitude_vpp.{pzt.pzt[1]}": 4.0,
            }
        )

        def record() -> np.ndarray:
            waves = scope.acquire([iq.channel_i, iq.channel_q])
            assert not scope.overloaded(iq.channel_i) and not scope.overloaded(iq.channel_q)
            return waves[iq.channel_i].volts + 1j * waves[iq.channel_q].volts

        rx = IsaqnReceiver(iq, sequences)
        electronic = [record() for _ in range(4)]
        ins[iq.laser].set("emission", True)
        clock.advance(2.0)  # laser turn-on
        shot = [record() for _ in range(4)]
        for seq in sequences:
            for port in (seq.node.awg_i, seq.node.awg_q):
                ins[port[0]].output_on(port[1])
        ins[pzt.pzt[0]].output_on(pzt.pzt[1])
        rx.calibrate(electronic, shot)
        first = record()
        t0_s = scope_t0 = bench.sim_host.sims[iq.scope].last_acquisition[0]
        syncs = rx.synchronise(first, t0_s)
        results = [rx.process(first)]
        for _ in range(11):
            results.append(rx.process(record()))
        net = bench.sim_host.bench.elements[iq.icr]
        truth_phase = [net.phase_rad(k, np.asarray([scope_t0])) for k in range(3)]
        yield {
            "config": config,
            "rx": rx,
            "syncs": syncs,
            "results": results,
            "net": net,
            "t0_s": t0_s,
            "truth_phase": truth_phase,
        }


def test_timing_and_frame_sync_find_the_twin_delays(run):
    net, rx = run["net"], run["rx"]
    fs = rx.fs_hz
    for k, sync in enumerate(run["syncs"]):
        # the AWG centres symbol m on m / R; it reaches the scope tau later, and the stream
        # starts at the first record's t0: centres at t0 + (delay + m sps) / fs
        truth = ((net.fibre_delay_s(k) - run["t0_s"]) * fs) % rx.sps
        err = (sync.delay_samples - truth + rx.sps / 2) % rx.sps - rx.sps / 2
        assert abs(err) < 0.1, (k, sync.delay_samples, truth)
        assert sync.peak_to_sidelobe > 10


def test_transmittance_inside_its_interval_and_no_lock_loss(run):
    cfg, rx, net = run["config"], run["rx"], run["net"]
    for b in range(3):
        sums = PeSums()
        for res in run["results"][1:]:
            assert res.bands[b].locked
            sums = sums + res.bands[b].pe
        est = estimate_from_sums(sums, cfg.isaqn.eta, rx.calibration[b].v_el_snu, 0.999)
        truth = net.transmittance(b)
        # 11 records of 3750 quantum symbols: sigma(T)/T ~ 1.6 % (the 2 % of the issue needs
        # ~7x more symbols); the truth must sit inside the 99.9 % interval
        assert est.transmittance_ci[0] < truth < est.transmittance_ci[1], (b, est)
        assert est.transmittance == pytest.approx(truth, rel=0.06), b


def test_pilot_phase_tracks_the_pzt_vibration(run):
    """Node 1's PZT: 5 Hz, 20 rad peak; the unwrapped pilot phase follows the twin's truth."""
    net = run["net"]
    t = np.concatenate([r.bands[0].pilot_t_s for r in run["results"]])
    phase = np.concatenate([r.bands[0].pilot_phase_rad for r in run["results"]])
    truth = net.phase_rad(0, t)
    assert np.ptp(truth) > 30  # hundreds of rad need a faster bench; tens here
    corr = np.corrcoef(phase - phase.mean(), truth - truth.mean())[0, 1]
    assert corr > 0.999
    # no cycle slips: the difference is a constant (the carrier phase offset) plus noise
    diff = phase - truth
    assert np.ptp(diff - np.median(diff)) < 1.5
