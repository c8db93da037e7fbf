"""The entanglement main job on the simulated bench: accuracy against the twin's truth.

One run of the shipped bench (``configs/entanglement_sim.toml``) on a manual clock: 12 s of
data, two phase scans. The photon-pair source logs its truth (registered pairs and singles),
so CAR, the tagger clock drift and the peak delays are checked against what really happened.
Then the recorded tag batches are replayed through a fresh stream and monitor in other cuts.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from drivers.tdc import TagBatch
from labctl.config import CONFIG_DIR, load_bench
from labctl.entangle_job import EntanglementJob, JobError, run_entanglement
from labctl.entangle_monitor import EntanglementMonitor, scan_phases
from labctl.entangle_record import open_entanglement
from labctl.entangle_status import EntanglementStatus
from labctl.entangle_stream import TagStream

BENCH = CONFIG_DIR / "entanglement_sim.toml"
DURATION_S = 12.0


class Run:
    job: EntanglementJob
    source: object
    taggers: dict
    sims: dict
    statuses: list[EntanglementStatus]
    batches: list[tuple[str, TagBatch]]
    #: (scan step in progress, the twin's phase of every user now) at each update
    phases: list[tuple[int, dict[str, float]]]


@pytest.fixture(scope="module")
def run() -> Run:
    config = load_bench(BENCH)
    out = Run()
    out.statuses, out.batches, out.phases = [], [], []

    def hook(job: EntanglementJob) -> None:
        out.job = job
        sim_bench = job.bench.sim_host.bench
        out.vclock = sim_bench.clock
        out.source = sim_bench.elements[job.ent.source]
        out.source.start_truth_log()
        out.taggers = {name: sim_bench.instruments[name] for name in job.ent.taggers}
        out.sims = sim_bench.instruments
        for name in job.ent.taggers:  # keep every batch the job reads, for the replay tests
            driver = job.bench.instruments[name]
            read = driver.read_tags

            def recording(max_wait_s, *, until_ps=None, _read=read, _name=name):
                batch = _read(max_wait_s, until_ps=until_ps)
                out.batches.append((_name, batch))
                return batch

            driver.read_tags = recording

    def phases(status: EntanglementStatus) -> None:
        now = out.vclock.now_s()
        users = out.job.users
        out.phases.append((status.scan_step, {u: out.source.user_phase_rad(u, now) for u in users}))

    last, info = run_entanglement(
        config,
        duration_s=DURATION_S,
        sinks=[out.statuses.append, phases],
        clock=VirtualClock(realtime=False),
        job_hook=hook,
    )
    assert last is not None and info["lost_events"] == 0
    return out


def _span_s(run: Run) -> tuple[float, float]:
    mon = run.job.monitor
    return mon.start_ps * 1e-12, mon.horizon_ps * 1e-12


def test_every_user_pair_is_reported_with_live_figures(run):
    last = run.statuses[-1]
    assert [(r.user_a, r.user_b) for r in last.pairs] == [
        ("alice", "bob"),
        ("alice", "carol"),
        ("alice", "dave"),
        ("bob", "carol"),
        ("bob", "dave"),
        ("carol", "dave"),
    ]
    for r in last.pairs:
        assert 50e3 < r.singles_a_hz < 200e3 and 50e3 < r.singles_b_hz < 200e3
        assert r.coincidences_hz > 0 and r.car > 20
        assert r.scans >= 1 and 0.9 < r.visibility < 1.02
        assert r.qber_z == pytest.approx((1 - r.visibility) / 2)
        assert r.key_rate_bps > 0
    assert last.total_key_rate_bps == pytest.approx(sum(r.key_rate_bps for r in last.pairs))
    assert last.clock_state == "tracking" and last.clock_locked_fraction > 0.8
    assert all(p.emission and p.power_mw == pytest.approx(0.5, rel=0.02) for p in last.pumps)
    assert last.tec is not None and abs(last.tec.temperature_c - 25.0) < 0.01
    assert json.loads(json.dumps(last.to_dict()))["pairs"][0]["user_a"] == "alice"


def test_the_run_ends_with_every_instrument_safe(run):
    sims = run.sims
    assert not sims["pump0"].emission and not sims["pump10"].emission
    assert not any(ch.output for name in ("awg1", "awg2") for ch in sims[name].channels.values())
    assert not sims["tec1"].output
    assert not any(t.streaming for t in run.taggers.values())


def test_the_bench_loops_run_with_the_job_and_hold_the_scan_phases(run):
    """`labctl run` runs the bench file's loops: the TEC loop holds the ring, the pumps are
    locked, and the users' phase locks hold the twin's interferometer phases at the phases the
    scan asks for (the scan moves their setpoints), whatever each interferometer's own offset."""
    last = run.statuses[-1]
    rows = {r.name: r for r in last.loops}
    assert set(rows) == {
        "ring-temperature",
        "pump0-lock",
        "pump10-lock",
        "alice-phase",
        "bob-phase",
        "carol-phase",
        "dave-phase",
    }
    assert all(r.status.state == "running" and r.status.ticks > 0 for r in rows.values())
    assert abs(rows["ring-temperature"].status.error) < 0.001  # degC
    assert abs(rows["pump0-lock"].status.error) < 20 and abs(rows["pump10-lock"].status.error) < 20
    assert all(rule.state == "armed" for rule in last.interlocks.values())
    offsets = {u.name: u.phase_offset_rad for u in run.source.physics.users}
    assert max(offsets.values()) - min(offsets.values()) > 1  # open loop would show them
    n = run.job.ent.scan_steps
    for step, twin in run.phases[1:]:
        wanted = scan_phases(run.job.users, step, n)
        for user, phase in twin.items():
            miss = (phase - wanted[user] + math.pi) % (2 * math.pi) - math.pi
            assert abs(miss) < 0.05, (step, user, phase, wanted[user])
    assert json.loads(json.dumps(last.to_dict()))["loops"]["alice-phase"]["kind"] == "phase_lock"


def _bench_text_with(old: str, new: str) -> str:
    text = BENCH.read_text()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "setpoint = 25.0                  # degC",
            "setpoint = 24.0",
            "setpoint 24 degC differs from entanglement.ring_temperature_c = 25",
        ),
        (
            "setpoint_nm = 1540.56\n",
            "setpoint_nm = 1540.57\n",
            "setpoint_nm 1540.5700 differs from the wavelength of pump 10 (1540.5600 nm)",
        ),
    ],
)
def test_loops_that_disagree_with_the_entanglement_section_are_refused(tmp_path, old, new, message):
    path = tmp_path / "bench.toml"
    path.write_text(_bench_text_with(old, new))
    config = load_bench(path)
    with pytest.raises(JobError) as info:
        run_entanglement(config, duration_s=1.0, clock=VirtualClock(realtime=False))
    assert str(path) in str(info.value) and message in str(info.value)


def test_car_within_five_percent_of_the_twins_truth(run):
    """Truth: the pairs whose both photons were registered with a delay inside the window,
    plus the accidentals singles_a * singles_b * window / T expected from the true singles."""
    mon, src = run.job.monitor, run.source
    t0, t1 = _span_s(run)
    w = run.job.ent.window_ps
    for p, link in enumerate(mon.links):
        x, y = link.channel_a, link.channel_b
        centre = src.channel_latency_ps(y) - src.channel_latency_ps(x)
        dt = src.truth_pair_dt_ps(x, y, t0, t1)
        n_true = int(np.count_nonzero(np.abs(dt - centre) <= w / 2))
        acc = src.truth_singles(x, t0, t1) * src.truth_singles(y, t0, t1) * w * 1e-12 / (t1 - t0)
        truth = (n_true + acc) / acc
        engine = mon.car_run(p)
        assert engine.car == pytest.approx(truth, rel=0.05), (link, engine.car, truth)
        assert engine.car_err < 0.02 * engine.car
        # the singles estimate of the accidentals agrees too
        assert mon.car_run(p, method="singles").car == pytest.approx(truth, rel=0.05)


def test_tracked_clock_drift_within_one_percent(run):
    tdc2 = run.taggers["tdc2"]
    _, t1 = _span_s(run)
    truth = tdc2.tagger_clock.drift_ppm(t1)
    assert run.job.stream.clock_status().drift_ppm == pytest.approx(truth, rel=0.01)
    assert run.statuses[-1].clock_drift_ppm == pytest.approx(truth, rel=0.01)


def test_delays_within_one_histogram_bin(run):
    """Same-tagger pairs against the latency difference of their channels; cross-tagger
    pairs relative to the sync pair (the tracked clock offset absorbs its delay)."""
    mon, src, ent = run.job.monitor, run.source, run.job.ent
    bin_ps = ent.bin_ps
    sync = run.job.stream.sync
    sync_p = mon.pairs.index(sync)
    sync_truth = src.channel_latency_ps(mon.links[sync_p].channel_b) - src.channel_latency_ps(
        mon.links[sync_p].channel_a
    )
    for p, link in enumerate(mon.links):
        truth = src.channel_latency_ps(link.channel_b) - src.channel_latency_ps(link.channel_a)
        same = ent.channel(link.channel_a).tagger == ent.channel(link.channel_b).tagger
        found = mon.delay_ps(p)
        if same:
            assert abs(found - truth) <= bin_ps, (link, found, truth)
        else:
            relative = found - mon.delay_ps(sync_p)
            assert abs(relative - (truth - sync_truth)) <= bin_ps, (link, relative)


def test_visibility_matches_the_twins_fringe(run):
    """Raw visibility = V_intrinsic x C / (C + A) (accidentals do not interfere)."""
    mon = run.job.monitor
    v0 = run.source.physics.franson_visibility
    for p, link in enumerate(mon.links):
        v, err, scans = mon.visibility(p)
        res = mon.car_run(p)
        expected = v0 * (1 - 1 / res.car)
        assert scans == 2
        assert abs(v - expected) < 4 * err + 0.005, (link, v, err, expected)


def _replay(run: Run, batches: list[tuple[str, TagBatch]]) -> EntanglementMonitor:
    job = run.job
    stream = TagStream(
        [(c.tagger, c.input) for c in job.ent.channels],
        job.ent.reference_tagger,
        sync=job.stream.sync,
        max_offset_s=job.ent.max_clock_offset_s,
        max_drift_ppm=job.ent.max_drift_ppm,
    )
    mon = EntanglementMonitor(job.ent)
    for name, batch in batches:
        stream.push(name, batch)
        chunk = stream.pop()
        if chunk is not None:
            mon.push(chunk)
    return mon


def _recut(batches: list[tuple[str, TagBatch]], seed: int) -> list[tuple[str, TagBatch]]:
    """The same tags in other batches: per tagger joined, cut at random, interleaved."""
    rng = np.random.default_rng(seed)
    per = {}
    for name, b in batches:
        per.setdefault(name, []).append(b)
    pieces = {}
    for name, bs in per.items():
        whole = TagBatch.concatenate(bs)
        cuts = np.sort(rng.choice(len(whole), size=40, replace=False))
        edges = [0, *cuts.tolist(), len(whole)]
        out = []
        for lo, hi in itertools.pairwise(edges):
            last = hi == len(whole)
            horizon = whole.horizon_ps if last else int(whole.timestamp_ps[hi])
            out.append(
                TagBatch(whole.channel[lo:hi], whole.timestamp_ps[lo:hi], horizon_ps=horizon)
            )
        pieces[name] = out
    order = [n for n, bs in pieces.items() for _ in bs]
    rng.shuffle(order)
    iters = {n: iter(bs) for n, bs in pieces.items()}
    return [(n, next(iters[n])) for n in order]


def test_stream_and_histograms_are_the_same_for_any_cut_of_the_batches(run):
    """The live batches, one batch per tagger and random re-cuts (interleaved differently)
    give identical merged streams: same start, histograms and singles."""
    live = _replay(run, run.batches)
    assert live.counts.hist.sum() > 0 and math.isfinite(live.delay_ps(0))
    # the live monitor saw the same stream (it stopped at the duration, before the last pops)
    assert live.start_ps == run.job.monitor.start_ps
    assert np.all(live.counts.hist >= run.job.monitor.counts.hist)
    joined = [
        (n, TagBatch.concatenate([b for m, b in run.batches if m == n]))
        for n in run.job.ent.taggers
    ]
    for batches in (joined, _recut(run.batches, 1), _recut(run.batches, 2)):
        other = _replay(run, batches)
        assert other.start_ps == live.start_ps and other.horizon_ps == live.horizon_ps
        assert np.array_equal(other.counts.hist, live.counts.hist)
        assert np.array_equal(other.counts.singles, live.counts.singles)


def test_cli_run_streams_until_ctrl_c_and_leaves_the_bench_safe(tmp_path):
    """Real time, as a user runs it: plain updates on stdout, Ctrl-C ends the run cleanly
    with a complete recording."""
    h5 = tmp_path / "run.h5"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", "run", str(BENCH), "--plain", "--output", str(h5)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("t = 3."):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    text = "".join(seen) + out
    assert proc.returncode == 0, err
    assert "alice-carol" in text and "clock tracking" in text
    assert "run finished (Ctrl-C)" in err and "left safe" in err
    with open_entanglement(h5) as cap:
        assert cap.complete and cap.n_statuses >= 3 and cap.n_units > 0
