"""``labctl gui [CONFIG | FILE.h5]``: the Qt dashboard, live on a bench or replaying a recording.

    labctl gui                           the simulated ISAQN bench, live, recorded to runs/
    labctl gui configs/entanglement_sim.toml
    labctl gui runs/isaqn-sim-....h5     replay (timeline, speed, pause)
    labctl gui --screenshot OUT.png [--after-s S] [CONFIG | FILE.h5]
                                         render offscreen after S s of running, save, exit

On a machine without a display (no ``DISPLAY``/``WAYLAND_DISPLAY``, no ``QT_QPA_PLATFORM``) and
without ``--screenshot``, it says so in one line and suggests ``labctl run``. Registered by
:mod:`labctl.cli`; the application is in :mod:`gui` (imported only when the command runs).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

#: platforms that draw without a display
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def add_parser(subparsers: Any) -> None:
    """Register ``gui`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "gui",
        help="the Qt dashboard: a bench live (default: the simulated bench) or a recording",
        description=(
            "The dashboard: spectra, phases, constellations, coincidences, loops, interlocks "
            "and instrument panels. With a bench file it runs the bench live and records it "
            "(as labctl run does); with an HDF5 recording it replays it through the live "
            "pipeline. The layout is saved between sessions."
        ),
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="bench file (TOML) or recording (.h5); default: the shipped simulated bench",
    )
    p.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="render the dashboard offscreen after --after-s seconds, save it, exit",
    )
    p.add_argument(
        "--after-s",
        type=float,
        default=8.0,
        metavar="S",
        help="seconds of running before the screenshot (default 8)",
    )
    p.add_argument(
        "--output", type=Path, default=None, help="live: the recording (default runs/...)"
    )
    p.add_argument("--no-record", action="store_true", help="live: start without recording")
    p.add_argument(
        "--flush",
        dest="flush_s",
        type=float,
        default=1.0,
        metavar="S",
        help="live: commit the recording every S seconds (default 1)",
    )
    p.add_argument(
        "--speed",
        default="1x",
        help="replay: data seconds per wall second, e.g. 1x, 5x, max (default 1x)",
    )
    p.set_defaults(func=cmd_gui)


def has_display() -> bool:
    """Whether Qt can open windows here (a display, or a platform plugin chosen by the user)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def cmd_gui(args: argparse.Namespace) -> int:
    from labctl.cli import CliError

    if args.screenshot is None and not has_display():
        raise CliError(
            "gui: no display here (DISPLAY and WAYLAND_DISPLAY are unset); `labctl run` shows "
            "the bench in the terminal, `labctl gui --screenshot OUT.png` renders the "
            "dashboard offscreen"
        )
    if args.screenshot is not None:
        if not args.after_s >= 0:
            raise CliError(f"--after-s {args.after_s}: expected a time >= 0 s")
        if args.screenshot.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
            raise CliError(f"--screenshot {args.screenshot}: expected a .png (or .jpg) file")
        if not has_display() or os.environ.get("QT_QPA_PLATFORM") is None:
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
    source = _make_source(args)
    return run_dashboard(source, screenshot=args.screenshot, after_s=args.after_s)


def _make_source(args: argparse.Namespace) -> Any:
    """The live or replay source the target names (errors are one line)."""
    from labctl.cli import CliError, _recording_path
    from labctl.config import load_bench
    from labctl.h5read import RecordingError

    target = None if args.target is None else Path(args.target)
    if target is not None and target.suffix.lower() in (".h5", ".hdf5"):
        from gui.sources import ReplaySource, replay_info
        from labctl.replay_h5 import parse_speed

        if not target.exists():
            raise CliError(f"{target}: no such file")
        try:
            speed = parse_speed(args.speed)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        try:
            info = replay_info(target)
        except (RecordingError, OSError, KeyError, ValueError) as exc:
            raise CliError(f"{target}: cannot replay: {exc}") from exc
        return ReplaySource(info, speed=math.inf if speed is None else speed)
    from gui.sources import LiveSource

    config = load_bench(target)
    path = _recording_path(args, config)
    return LiveSource(config, record_path=path, flush_s=args.flush_s)


#: Qt warnings that are noise here (the offscreen platform cannot honour window size hints)
_QT_NOISE = ("does not support propagateSizeHints",)


def _qt_messages(mode: Any, context: Any, message: str) -> None:
    """Qt's messages on stderr, less the known noise."""
    if not any(noise in message for noise in _QT_NOISE):
        print(f"qt: {message}", file=sys.stderr)


def run_dashboard(source: Any, *, screenshot: Path | None = None, after_s: float = 8.0) -> int:
    """Show the dashboard on ``source`` until the window closes (or, with ``screenshot``, save
    it after ``after_s`` seconds and close). 0, or 1 if the source ended on a fault."""
    import pyqtgraph as pg
    from PySide6.QtCore import QTimer, qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow

    qInstallMessageHandler(_qt_messages)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    pg.setConfigOptions(antialias=False)
    window = MainWindow(source, persist_layout=screenshot is None)  # shots: default layout
    faults: list[str] = []
    source.fault.connect(faults.append)

    if screenshot is not None:

        def shoot() -> None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(screenshot)):
                faults.append(f"--screenshot {screenshot}: could not be written")
            else:
                print(f"screenshot saved to {screenshot}", file=sys.stderr)
            window.close()

        QTimer.singleShot(round(after_s * 1000), shoot)

    previous = signal.signal(signal.SIGINT, lambda *_: window.close())
    keep_python_awake = QTimer()  # lets Python run its Ctrl-C handler during Qt's loop
    keep_python_awake.timeout.connect(lambda: None)
    keep_python_awake.start(200)
    try:
        window.show()
        source.start()
        app.exec()
    finally:
        signal.signal(signal.SIGINT, previous)
        source.stop()
        # the worker hands over to the GUI thread (blocking) before it closes the bench:
        # keep serving events until it has made the bench safe
        deadline = time.monotonic() + 120.0
        while not source.wait(0.05) and time.monotonic() < deadline:
            app.processEvents()
    for text in faults:
        print(f"labctl: {text}", file=sys.stderr)
    return 1 if faults else 0
