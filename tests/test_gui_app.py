"""``labctl gui``: the command line, the replay clock, and the dashboard on an instruments-only
bench (the data panels of the ISAQN and entanglement benches: tests/test_gui_dashboard.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import pytest
from PySide6.QtGui import QImage

from gui.sources import ReplayClock
from labctl.gui_cli import has_display

ROOT = Path(__file__).resolve().parents[1]


def _labctl(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labctl", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _env_without_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_without_a_display_gui_says_so_in_one_line(tmp_path: Path) -> None:
    res = _labctl("gui", env=_env_without_display(), cwd=tmp_path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "no display" in lines[0] and "labctl run" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_has_display_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert has_display() is (not sys.platform.startswith("linux"))
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert has_display()
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("DISPLAY", ":0")
    assert has_display()


def test_screenshot_of_a_live_bench_is_saved_and_the_run_recorded(tmp_path: Path) -> None:
    """The instruments-only foundation bench: connect, safe start, panels, recording."""
    out = tmp_path / "shot.png"
    rec = tmp_path / "runs" / "bench.h5"
    res = _labctl(
        "gui",
        str(ROOT / "configs" / "sim_bench.toml"),
        "--screenshot",
        str(out),
        "--after-s",
        "3",
        "--output",
        str(rec),
        env=_env_without_display(),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 600
    with h5py.File(rec, "r") as f:  # closed cleanly, settings snapshot of every instrument
        assert f.attrs["format"] == "labctl-bench"
        names = {row["instrument"].decode() for row in f["settings/snapshots"][:]}
    assert names == {"laser1", "awg1", "scope1", "tagger1", "tec1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--screenshot", "x.txt"), "expected a .png"),
        (("--screenshot", "x.png", "--after-s", "-1"), "expected a time >= 0"),
        (("missing.h5",), "missing.h5: no such file"),
        (("--speed", "fast", "rec.h5"), "--speed"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "rec.h5").write_bytes(b"not hdf5")
    env = _env_without_display()
    env["QT_QPA_PLATFORM"] = "offscreen"
    res = _labctl("gui", *args, env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_file_that_is_not_a_recording_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "rec.h5").write_bytes(b"not hdf5")
    env = _env_without_display()
    env["QT_QPA_PLATFORM"] = "offscreen"
    res = _labctl("gui", "rec.h5", env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert "rec.h5: cannot replay" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# -- the replay clock ------------------------------------------------------------------------
def test_replay_clock_advances_by_what_was_slept() -> None:
    data_s = [0.0]
    clock = ReplayClock(threading.Event(), lambda: data_s[0])
    clock.set_rate(100.0)  # 0.2 s of data in ~2 ms
    clock.sleep(0.2)
    assert clock.time() == pytest.approx(0.2)
    clock.set_rate(math.inf)
    clock.sleep(5.0)
    assert clock.time() == pytest.approx(5.2)


def test_replay_clock_runs_through_to_a_seek_target_even_when_paused() -> None:
    data_s = [1.0]
    clock = ReplayClock(threading.Event(), lambda: data_s[0])
    clock.set_paused(True)
    clock.fast_until_s = 10.0
    clock.sleep(3.0)  # data (1 s) before the target (10 s): no wait at all
    assert clock.time() == pytest.approx(3.0)
    assert clock.fast()
    data_s[0] = 10.0
    assert not clock.fast()


def test_paused_replay_clock_waits_until_resumed_or_stopped() -> None:
    stop = threading.Event()
    clock = ReplayClock(stop, lambda: 0.0)
    clock.set_paused(True)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (clock.sleep(0.01), done.set()))
    worker.start()
    assert not done.wait(0.3)  # held while paused
    assert clock.time() == 0.0
    clock.set_paused(False)
    worker.join(10)
    assert done.is_set() and clock.time() == pytest.approx(0.01)
    clock.set_paused(True)
    worker = threading.Thread(target=lambda: clock.sleep(1.0))
    worker.start()
    stop.set()  # a stop ends the wait too
    worker.join(10)
    assert not worker.is_alive()


def test_replay_clock_refuses_a_speed_that_is_not_positive() -> None:
    clock = ReplayClock(threading.Event(), lambda: 0.0)
    with pytest.raises(ValueError, match="replay speed 0"):
        clock.set_rate(0.0)


# -- garbage collection on the GUI thread ----------------------------------------------------
def test_cycles_are_collected_on_the_gui_thread_while_the_policy_is_held(qtbot) -> None:
    """A worker allocating heavily never runs the cycle collector (which could destroy a Qt
    object there and deadlock with the GUI thread): the GUI thread's timer does."""
    import gc

    from gui import gc_policy

    collected_on: list[threading.Thread] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            collected_on.append(threading.current_thread())

    was = gc.isenabled()
    gc_policy.acquire()
    try:
        assert not gc.isenabled() and gc_policy.users() >= 1
        Cycle()  # unreachable at once, but only the collector can free it
        kept: list[list] = []  # net allocations past the collector's first threshold
        worker = threading.Thread(target=lambda: kept.extend([] for _ in range(50_000)))
        worker.start()
        worker.join()
        assert collected_on == [] or collected_on == [threading.main_thread()]
        qtbot.waitUntil(lambda: bool(collected_on), timeout=10_000)
        assert collected_on == [threading.main_thread()]
    finally:
        gc_policy.release()
    assert gc.isenabled() == was and gc_policy.users() == 0
