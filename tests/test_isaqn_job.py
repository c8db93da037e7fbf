"""The ISAQN main job end to end on the simulated bench (configs/isaqn_sim.toml).

Everything real: simulators on sockets, waveforms uploaded through the drivers, the scope's
records read over TCP, the HDF5 recording on disk. The clock is manual so the run does not
wait for the wall clock and records are contiguous.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.config import CONFIG_DIR, load_bench
from labctl.isaqn_job import IsaqnJob
from labctl.isaqn_record import IsaqnRecorder, open_isaqn
from labctl.isaqn_status import NetworkStatus

ISAQN_BENCH = CONFIG_DIR / "isaqn_sim.toml"
DATA_S = 8.0


@pytest.fixture(scope="module")
def job_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    config = load_bench(ISAQN_BENCH)
    path = tmp_path_factory.mktemp("isaqn") / "run.h5"
    statuses: list[NetworkStatus] = []
    bench = Bench(config, clock=VirtualClock(realtime=False))
    try:
        bench.connect()
        bench.apply_safe_start()
        host = bench.sim_host
        net = host.bench.elements[config.isaqn.icr]
        job = IsaqnJob(bench, config)
        rec = IsaqnRecorder(path, config, wavelength_nm=job.wavelength_nm)
        try:
            rec.attach(bench.instruments)
            job.record_sink = rec.record
            last = job.run(duration_s=DATA_S, sinks=[statuses.append, rec.status])
        finally:
            rec.close()
        truth_t = [float(net.transmittance(k)) for k in range(3)]
    finally:
        bench.close()
    return {
        "config": config,
        "job": job,
        "host": host,
        "last": last,
        "statuses": statuses,
        "path": path,
        "truth_t": truth_t,
    }


def test_a_status_per_update_interval_every_band_locked(job_run: dict) -> None:
    statuses = job_run["statuses"]
    assert len(statuses) == int(DATA_S / job_run["config"].isaqn.update_s)
    assert [round(s.t_s) for s in statuses] == list(range(1, len(statuses) + 1))
    for st in statuses:
        assert [n.name for n in st.nodes] == ["node1", "node2", "node3"]
        assert all(n.locked for n in st.nodes)
        assert st.overloads == 0


def test_transmittance_interval_holds_the_truth_and_key_rate_follows(job_run: dict) -> None:
    last: NetworkStatus = job_run["last"]
    for node, truth in zip(last.nodes, job_run["truth_t"], strict=True):
        lo, hi = node.transmittance_ci
        assert lo <= truth <= hi, (node.name, truth, node.transmittance_ci)
        assert abs(node.transmittance / truth - 1) < 0.05
        # the excess noise interval includes the shot-noise calibration's uncertainty
        assert node.xi_ci_snu[0] < node.xi_snu < node.xi_ci_snu[1]
        assert node.n_symbols > 250_000
        assert math.isfinite(node.key_rate_bits_per_symbol)
        rate_hz = 50e3 * 3 / 4  # quantum symbols only
        assert node.skr_bps == pytest.approx(node.key_rate_bits_per_symbol * rate_hz)
        assert 0.17 < node.v_el_snu < 0.19  # the twin's v_el is 0.18 SNU


def test_spm_flags_the_pzt_node_and_not_the_quiet_one_before_the_event(job_run: dict) -> None:
    # node1's PZT: 5 Hz, 2 Vpp at 10 rad/V = 10 rad peak; node3 has no PZT
    statuses = job_run["statuses"]
    assert all(s.nodes[0].vibrating for s in statuses[2:])
    assert statuses[-1].nodes[0].castdown_db > 3.0
    assert not any(s.nodes[2].vibrating for s in statuses[:3])
    # phase statistics: a 10 rad-peak sine has rms 7.07 rad
    assert statuses[-1].nodes[0].phase_rms_rad == pytest.approx(10 / math.sqrt(2), rel=0.05)
    assert statuses[-1].nodes[2].phase_rms_rad < 0.5
    for node in statuses[-1].nodes:
        assert 0 < node.phase_floor_rad2_per_hz < 1e-4
        assert 0 < node.strain_resolution_per_rthz < 1e-12


def test_the_event_is_located_within_one_percent_of_the_node_spacing(job_run: dict) -> None:
    config = job_run["config"]
    event = config.isaqn.sim.events[0]
    location = job_run["last"].location
    assert location is not None, "the event was not located"
    spacing = math.hypot(8660.254 * 2, 0.0)
    err = math.hypot(location.x_m - event.x_m, location.y_m - event.y_m)
    assert err < 0.01 * spacing, (location, err)
    assert location.nodes == ("node1", "node2", "node3")
    assert not location.ambiguous


def test_instruments_are_left_safe(job_run: dict) -> None:
    sims = job_run["host"].sims
    assert sims["laser1"].emission is False
    for awg in ("awg1", "awg2", "awg3", "awg4"):
        assert not any(ch.output for ch in sims[awg].channels.values()), awg


def test_the_recording_holds_every_record_and_status(job_run: dict) -> None:
    job = job_run["job"]
    with open_isaqn(job_run["path"]) as cap:
        assert cap.complete
        assert cap.n_units == job.records_acquired
        n_cal = job_run["config"].isaqn.calibration_records
        kinds = [r.kind for r in cap.units()]
        assert kinds[:n_cal] == ["electronic"] * n_cal
        assert kinds[n_cal : 2 * n_cal] == ["shot"] * n_cal
        assert set(kinds[2 * n_cal :]) == {"data"}
        # every status as the live run emitted it, bit for bit
        recorded = cap.statuses()
        assert len(recorded) == len(job_run["statuses"])
        for got, live in zip(recorded, job_run["statuses"], strict=True):
            assert got.to_dict() == live.to_dict()
        record = next(cap.units(2 * n_cal, 2 * n_cal + 1))
        assert record.samples.dtype == np.complex128
        assert record.samples.size == job_run["config"].isaqn.record_length
        # the settings: a snapshot of every instrument, then the job's writes as they happened
        snapshots = cap.rec.table("settings/snapshots")
        assert sorted(map(str, snapshots["instrument"])) == sorted(job_run["config"].instruments)
        changes = cap.rec.table("settings/changes")
        emission = [
            json.loads(str(row["value"]))
            for row in changes
            if str(row["instrument"]) == "laser1" and str(row["setting"]) == "emission"
        ]
        assert emission[:2] == [False, True]  # LO off for the electronic noise, then on


# -- the command line ------------------------------------------------------------------


def _labctl(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_labctl_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """Real time: the first status appears, Ctrl-C, the run ends with a complete recording."""
    out = tmp_path / "run.h5"
    proc = _labctl("run", str(ISAQN_BENCH), "--plain", "--output", str(out))
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("t = 1.00 s"):
            proc.send_signal(signal.SIGINT)
            break
    else:
        proc.kill()
        pytest.fail("no status within 90 s:\n" + "".join(lines))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "run finished (Ctrl-C)" in stderr
    assert "instruments left safe" in stderr
    with open_isaqn(out) as cap:
        assert cap.complete and cap.n_statuses >= 1 and cap.n_units >= 41
