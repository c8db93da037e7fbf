"""The ISAQN twin driven through the instruments, received by the ISAQN pipeline.

Everything goes over the real transports (tests/isaqn_harness.py runs the job's own configure,
calibrate and acquire steps): waveforms uploaded to the simulated 33500Bs, the
scope's records read over its socket; the twin (drivers/sim/isaqn.py) only propagates light.
The virtual clock is manual, so consecutive records are contiguous and nothing sleeps.
"""

from __future__ import annotations

import numpy as np
import pytest
from isaqn_harness import bench_variant, capture, pzt

from dsp.cvqkd import PeSums, estimate_from_sums


@pytest.fixture(scope="module")
def run():
    """Upload, calibrate, synchronise and stream 12 records (1.2 s) of the shipped bench,
    node 1's PZT at 5 Hz, 20 rad peak."""
    config = bench_variant(
        isaqn={"calibration_records": 4},
        nodes={"node1": {"pzt_drive": pzt("SIN", 5.0, 4.0)}},
    )
    cap = capture(config, 12)
    return {
        "config": config,
        "rx": cap.receiver,
        "syncs": [s.sync for s in cap.receiver.streams],
        "results": cap.results,
        "net": cap.net,
        "t0_s": cap.t0_s,
        "truth_phase": cap.truth_phase_rad,
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
    phase = np.concatenate([r.bands[0].pilot_phase_rad for r in run["results"]])
    truth = run["truth_phase"][0]
    assert np.ptp(truth) > 30  # hundreds of rad need a faster bench; tens here
    corr = np.corrcoef(phase - phase.mean(), truth - truth.mean())[0, 1]
    assert corr > 0.999
    # no cycle slips: the difference is a constant (the carrier phase offset) plus noise
    diff = phase - truth
    assert np.ptp(diff - np.median(diff)) < 1.5
