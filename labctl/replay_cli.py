"""``labctl replay FILE...``: recordings through the live pipeline, PTU files through the
coincidence engine.

* one ``.h5`` recording (``labctl run``'s): :func:`labctl.replay_h5.replay_file`, the live
  display (or ``--json``), pacing, a time range, ``--follow``; the updates are compared with
  the ones the live run recorded (``--check``: a difference is an error);
* several recordings, ``--dask`` or ``--scheduler ADDRESS``: :func:`labctl.replay_dask.
  replay_many` on a Dask cluster (a local one with ``--workers`` processes by default), with
  a progress bar, then the same comparison per file;
* one ``.ptu`` file (PicoQuant): :mod:`labctl.replay_ptu`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from labctl import replay_ptu
from labctl.h5read import RecordingError

PTU_SUFFIXES = {".ptu"}


def add_parser(subparsers: Any) -> None:
    """Register ``replay`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "replay",
        help="replay recordings through the live pipeline (HDF5), or a PicoQuant PTU file",
        description=(
            "Push a labctl recording's raw data (scope records, time-tag batches) through the "
            "code that ran live and compare every update with the recorded one. Several "
            "files, --dask or --scheduler run on Dask, chunk by chunk with the DSP state "
            "carried across chunks. A .ptu file is streamed through the coincidence engine "
            "(singles, delay, accidentals, CAR)."
        ),
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="FILE.h5 ... or FILE.ptu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    h5 = p.add_argument_group("recordings (.h5)")
    h5.add_argument(
        "--speed",
        default="max",
        metavar="max|1x|Nx",
        help="data seconds per wall second (default max: as fast as possible)",
    )
    h5.add_argument(
        "--start",
        type=float,
        default=0.0,
        metavar="S",
        dest="start_s",
        help="report updates from S seconds of data (the chain still runs from "
        "the start: it needs the calibration and locks)",
    )
    h5.add_argument(
        "--end",
        type=float,
        default=None,
        metavar="S",
        dest="end_s",
        help="stop after S seconds of data",
    )
    h5.add_argument(
        "--follow",
        action="store_true",
        help="follow a file still being written until its writer closes it",
    )
    h5.add_argument(
        "--check",
        action="store_true",
        help="fail (exit 1) if an update differs from the recorded one",
    )
    h5.add_argument(
        "--all",
        action="store_true",
        dest="all_updates",
        help="--json: every update, not only the last",
    )
    h5.add_argument("--plain", action="store_true", help="plain text updates even on a terminal")
    dk = p.add_argument_group("batch replay on Dask")
    dk.add_argument(
        "--dask",
        action="store_true",
        help="run on Dask even for one file (default with several files)",
    )
    dk.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="an existing Dask scheduler (tcp://host:8786); default: a local cluster",
    )
    dk.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="local cluster: worker processes (default 2)",
    )
    dk.add_argument(
        "--chunk",
        type=int,
        default=None,
        metavar="UNITS",
        dest="chunk_units",
        help="records/reads per task (default: about 256 MiB of raw data)",
    )
    replay_ptu.add_arguments(p.add_argument_group("PicoQuant files (.ptu)"))
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from labctl.cli import CliError

    files: list[Path] = args.files
    ptu = [f for f in files if f.suffix.lower() in PTU_SUFFIXES]
    if ptu:
        if len(files) != 1:
            raise CliError("replay: a .ptu file is replayed alone (one file, no .h5 with it)")
        args.file = str(ptu[0])
        return int(replay_ptu.run(args) or 0)
    for f in files:
        if not f.is_file():
            raise CliError(f"{f}: no such file")
    try:
        if len(files) > 1 or args.dask or args.scheduler is not None:
            return _replay_dask(args, files)
        return _replay_one(args, files[0])
    except (RecordingError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _display_for(status: Any, plain: bool) -> Any:
    """The live display that shows ``status`` (the ISAQN one or the entanglement one)."""
    from labctl.entangle_status import EntanglementStatus

    if isinstance(status, EntanglementStatus):
        from labctl.entangle_display import EntanglementDisplay

        return EntanglementDisplay(plain=True if plain else None)
    from labctl.isaqn_display import LiveDisplay

    return LiveDisplay(plain=True if plain else None)


def _replay_one(args: argparse.Namespace, path: Path) -> int:
    from labctl.cli import CliError
    from labctl.replay_h5 import parse_speed, replay_file

    speed = parse_speed(args.speed)
    displays: list[Any] = []  # made at the first update, for its bench

    def show(_k: int, status: Any) -> None:
        if not displays:
            displays.append(_display_for(status, args.plain))
            displays[0].start()
        displays[0](status)

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        report = replay_file(
            path,
            speed=speed,
            start_s=args.start_s,
            end_s=args.end_s,
            follow=args.follow,
            sink=None if args.json else show,
            stop=stop,
        )
    finally:
        for display in displays:
            display.stop()
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(report.to_dict(all_updates=args.all_updates)))
    else:
        _summary(report)
    if args.check and report.mismatches:
        raise CliError(
            f"{path}: {len(report.mismatches)} differences from the recorded updates, first: "
            f"{report.mismatches[0]}"
        )
    return 0


def _summary(report: Any) -> None:
    state = "complete" if report.complete else "INCOMPLETE (interrupted or still written)"
    print(
        f"replayed {report.path} ({report.format}, {state}): {report.units} units, "
        f"{report.data_s:.2f} s of data in {report.elapsed_s:.2f} s, "
        f"{len(report.updates)} updates",
        file=sys.stderr,
    )
    if report.started_after_data_s is not None:
        print(
            f"recorded from {report.started_after_data_s:.2f} s into a live run: its live "
            "updates count from the run's start, so they are not compared",
            file=sys.stderr,
        )
    elif report.compared == 0:
        print("no recorded update to compare with", file=sys.stderr)
    elif report.mismatches:
        print(
            f"DIFFERS from the live run in {len(report.mismatches)} values "
            f"({report.compared} updates compared); first: {report.mismatches[0]}",
            file=sys.stderr,
        )
    else:
        print(
            f"matches the live run: {report.compared} updates equal to the recorded ones "
            "(relative tolerance 1e-9)",
            file=sys.stderr,
        )


def _replay_dask(args: argparse.Namespace, files: list[Path]) -> int:
    from rich.progress import Progress as RichProgress

    from labctl.cli import CliError
    from labctl.replay_dask import replay_many
    from labctl.replay_h5 import ReplayReport, compare_capture, open_capture

    if args.follow or args.speed != "max" or args.start_s or args.end_s is not None:
        raise CliError(
            "--follow, --speed, --start and --end are for one file; a Dask replay runs whole "
            "files as fast as possible"
        )
    if args.workers < 1:
        raise CliError(f"--workers {args.workers}: expected >= 1")
    bars: dict[str, Any] = {}
    with RichProgress(disable=args.json, transient=False) as bar:

        def progress(path: str, done: int, total: int) -> None:
            if path not in bars:
                bars[path] = bar.add_task(Path(path).name, total=total)
            bar.update(bars[path], completed=done)

        results = replay_many(
            files,
            scheduler=args.scheduler,
            n_workers=args.workers,
            chunk_units=args.chunk_units,
            progress=progress,
        )
    reports = []
    for path, updates in results.items():
        with open_capture(path) as cap:
            report = ReplayReport(path, cap.rec.format.name, cap.n_units, complete=cap.complete)
            report.updates = updates
            compare_capture(report, cap)
        reports.append(report)
    bad = sum(bool(r.mismatches) for r in reports)
    if args.json:
        files = []
        for r in reports:  # the Dask tasks time neither data nor wall per file
            d = r.to_dict()
            del d["data_s"], d["elapsed_s"]
            files.append(d)
        print(json.dumps({"files": files}))
    else:
        for r in reports:
            verdict = "matches the live run" if r.matches else "DIFFERS"
            print(
                f"{r.path}: {len(r.updates)} updates, {r.compared} compared: {verdict}",
                file=sys.stderr,
            )
    if args.check and bad:
        raise CliError(f"{bad} file(s) differ from their recorded updates")
    return 0
