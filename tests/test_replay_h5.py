"""Recording and replay end to end: the simulated benches record, replay reproduces.

The session's two recordings (tests/recordings.py, fixtures of tests/conftest.py) are made on a
manual clock (ISAQN: 3 s of data; entanglement: 4 s, loops and interlocks running), with the
recorders the CLI uses. Replay pushes their raw data through the live feeds and must
reproduce every recorded update; chunked replay on a 2-worker Dask LocalCluster must give the
single-process result exactly. A writer killed by SIGKILL leaves a
file replay reads; a file still being written is followed to its end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from recordings import ISAQN_BENCH, EntRecording, IsaqnRecording

from labctl.cli import main
from labctl.entangle_record import open_entanglement
from labctl.h5read import RecordingError
from labctl.h5record import FormatId, Recorder, Schema, Table
from labctl.isaqn_record import open_isaqn
from labctl.replay_h5 import open_capture, parse_speed, replay_chunk, replay_file
from labctl.run_record import settings_at

REPO = Path(__file__).resolve().parents[1]


# -- the recordings ---------------------------------------------------------------------------
def test_isaqn_recording_reads_back_as_the_live_run(isaqn_recording: IsaqnRecording) -> None:
    with open_isaqn(isaqn_recording.path) as cap:
        assert cap.complete
        assert [s.to_dict() for s in cap.statuses()] == [
            s.to_dict() for s in isaqn_recording.statuses
        ]
        assert cap.rec.attrs["format"] == "labctl-isaqn"
        assert cap.rec.attrs["format_version"] == "2.0"


def test_entanglement_recording_holds_tags_steps_loops_and_settings(
    ent_recording: EntRecording,
) -> None:
    with open_entanglement(ent_recording.path) as cap:
        assert cap.complete
        live = [s.to_dict() for s in ent_recording.statuses]
        assert cap.recorded_dicts() == live
        last = cap.n_statuses - 1
        assert np.array_equal(cap.histograms(last), ent_recording.hist)
        steps = cap.rec.table("derived/steps")
        assert steps.size >= 2 and np.all(np.diff(steps["step"]) == 1)
        loops = json.loads(cap.rec.info("derived/loops").attrs["loops"])
        assert [name for name, _, _ in loops] == list(live[-1]["loops"])
        reads = cap.rec.table("raw/reads")
        for k, tagger in enumerate(cap.taggers):  # the reads index every tag once, in order
            first, n = reads[:, k]["first_tag"], reads[:, k]["n_tags"]
            assert np.array_equal(first[1:], (first + n)[:-1])
            assert first[-1] + n[-1] == cap.rec.rows(f"raw/tags/{tagger}")
        changes = cap.rec.table("settings/changes")
        assert {"tec1", "pump0", "pump10"} <= set(map(str, changes["instrument"]))
        # the settings at any time: start snapshot plus the changes up to then
        status_t = cap.rec.table("derived/status")["t_unix_ns"]
        during = settings_at(cap.rec, int(status_t[-1]))
        assert during["pump0"]["emission"] is True
        assert during["tec1"]["setpoint_c"] == pytest.approx(cap.ent.ring_temperature_c)
        after = settings_at(cap.rec)  # the end: the safe state (pumps off) was recorded too
        assert after["pump0"]["emission"] is False and after["pump10"]["emission"] is False
        read_t = cap.rec.table("raw/read_times")
        assert read_t.size == reads.shape[0] and np.all(np.diff(read_t) >= 0)


# -- replay ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["isaqn_recording", "ent_recording"])
def test_replay_reproduces_every_recorded_update(which: str, request) -> None:
    run = request.getfixturevalue(which)
    report = replay_file(run.path)
    assert report.complete
    assert report.compared == report.recorded_updates == len(run.statuses) > 0
    assert report.mismatches == []
    assert [d for _, d in report.updates] == [s.to_dict() for s in run.statuses]


def test_replayed_entanglement_statuses_carry_the_recorded_loops_and_interlocks(
    ent_recording: EntRecording,
) -> None:
    """The status objects themselves (what the dashboard draws), not only their dicts."""
    got: list = []
    replay_file(ent_recording.path, sink=lambda k, st: got.append(st))
    live = ent_recording.statuses
    assert any(st.loops for st in live) and any(st.interlocks for st in live)
    assert [st.to_dict() for st in got] == [st.to_dict() for st in live]
    assert [type(r.status).__name__ for r in got[-1].loops] == ["LoopStatus"] * len(live[-1].loops)


def test_replay_time_range_reports_the_same_updates_as_a_full_replay(
    ent_recording: EntRecording,
) -> None:
    full = replay_file(ent_recording.path).updates
    start_s, end_s = 1.0, 2.2  # updates before, inside and after the range
    part = replay_file(ent_recording.path, start_s=start_s, end_s=end_s).updates
    assert part == [(k, d) for k, d in full if start_s - 1e-9 <= d["time_s"] <= end_s + 1e-9]
    assert len(part) == 3
    assert full[0][1]["time_s"] < start_s and full[-1][1]["time_s"] > end_s


def test_replay_paced_sleeps_the_data_time_over_the_speed(isaqn_recording: IsaqnRecording) -> None:
    now = [0.0]  # a simulated wall clock: replaying itself takes no time on it
    sleeps: list[float] = []

    def sleep(dt: float) -> None:
        sleeps.append(dt)
        now[0] += dt

    report = replay_file(isaqn_recording.path, speed=4.0, sleep=sleep, clock=lambda: now[0])
    assert sum(sleeps) == pytest.approx(report.data_s / 4.0, rel=1e-9)
    assert len(sleeps) == 30  # one per data record (the calibration records are at t = 0)
    with pytest.raises(ValueError, match="--speed 'fast'"):
        parse_speed("fast")
    assert parse_speed("max") is None and parse_speed("2.5x") == 2.5


def test_chunks_carry_the_state_exactly(ent_recording: EntRecording) -> None:
    path = ent_recording.path
    _, whole = replay_chunk(path, 0, None)
    feed, first = replay_chunk(path, 0, 57)
    feed, second = replay_chunk(path, 57, 120, feed)
    _, rest = replay_chunk(path, 120, None, feed)
    assert first and second and rest  # every chunk holds updates: the state is carried
    assert first + second + rest == whole
    with pytest.raises(ValueError, match="needs the previous feed"):
        replay_chunk(path, 5, 10)


def test_dask_local_cluster_with_two_workers_equals_single_process(
    isaqn_recording: IsaqnRecording, ent_recording: EntRecording
) -> None:
    from labctl.replay_dask import replay_many

    paths = [str(isaqn_recording.path), str(ent_recording.path)]
    progress: list[tuple[str, int, int]] = []
    results = replay_many(
        paths, n_workers=2, chunk_units=25, progress=lambda *a: progress.append(a)
    )
    for p in paths:
        _, single = replay_chunk(p, 0, None)
        assert results[p] == single
        done = [d for q, d, _ in progress if q == p]
        assert done == sorted(done) and done[-1] == open_capture(p).n_units


def test_cli_replay_json_and_check(ent_recording: EntRecording, capsys) -> None:
    assert main(["replay", str(ent_recording.path), "--json", "--check", "--all"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["matches_recorded"] and out["compared"] == len(ent_recording.statuses)
    assert out["all"] == [s.to_dict() for s in ent_recording.statuses]


# -- bad files ----------------------------------------------------------------------------------
def test_bad_files_give_one_clear_line(tmp_path: Path, ent_recording: EntRecording, capsys) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    cut = tmp_path / "cut.h5"
    data = ent_recording.path.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    other = tmp_path / "other.h5"
    schema = Schema(FormatId("someone-else", (1, 0)), [Table("t", np.float64)])
    Recorder(other, schema).close()
    cases = {
        garbage: "not a readable HDF5 file",
        cut: "cut.h5",
        foreign: "foreign.h5",
        other: "format 'someone-else'",
        tmp_path / "missing.h5": "no such file",
    }
    for path, text in cases.items():
        assert main(["replay", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("labctl: error: ") and str(path.name) in err, err
        assert text in err, err
        assert "Traceback" not in err and err.count("\n") == 0
        with pytest.raises((RecordingError, FileNotFoundError, ValueError)):
            open_capture(path)


# -- crash and follow ---------------------------------------------------------------------------
def _labctl(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_sigkilled_run_leaves_a_file_replay_reproduces(tmp_path: Path) -> None:
    """A real `labctl run` killed with SIGKILL after its third update: every committed
    update is replayed as recorded."""
    out = tmp_path / "killed.h5"
    proc = _labctl("run", str(ISAQN_BENCH), "--plain", "--flush", "0.2", "--output", str(out))
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    updates = 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        updates += line.startswith("t = ")
        if updates == 3:
            time.sleep(0.5)  # > 2 flush intervals: the third update is committed
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    report = replay_file(out)
    assert not report.complete
    assert report.recorded_updates >= 3
    assert report.compared == report.recorded_updates and report.mismatches == []


def test_follow_reads_a_file_while_it_is_written(
    tmp_path: Path, isaqn_recording: IsaqnRecording
) -> None:
    """Another process re-records the ISAQN capture slowly; a follower replays it while it
    grows and ends when the writer closes it, with every update."""
    path = tmp_path / "growing.h5"
    script = textwrap.dedent(
        f"""
        import time
        from labctl.config import load_bench
        from labctl.isaqn_record import IsaqnRecorder, open_isaqn
        src = open_isaqn({str(isaqn_recording.path)!r})
        rec = IsaqnRecorder(
            __import__("pathlib").Path({str(path)!r}), load_bench({str(ISAQN_BENCH)!r}),
            wavelength_nm=src.wavelength_nm, flush_interval_s=0.05,
        )
        statuses = src.statuses()
        print("started", flush=True)
        for k, record in enumerate(src.units()):
            rec.record(record)
            if (k + 1) % 10 == 0:
                time.sleep(0.1)
        for st in statuses:
            rec.status(st)
        rec.close()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    report = replay_file(path, follow=True, poll_s=0.05)
    assert proc.wait(timeout=60) == 0
    assert report.complete
    assert report.mismatches == [] and report.compared == len(isaqn_recording.statuses)
    assert report.units == open_isaqn(path).n_units
    shutil.rmtree(tmp_path, ignore_errors=True)
