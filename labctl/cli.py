"""The ``labctl`` command line.

    labctl sim [CONFIG] [--json]          start a bench's simulators and keep them running
    labctl instruments [CONFIG] [--json]  connect to every instrument, print identity and state
    labctl run [CONFIG]                   the main job on a bench, live and recorded to HDF5
                                          (ISAQN network; entanglement: per user pair)
    labctl loops [CONFIG] [--loop NAME]   run the bench file's feedback loops and interlocks
    labctl autotune [CONFIG] --loop NAME  step one loop's actuator, fit a model, propose gains
    labctl bench isaqn [--json]           receiver DSP throughput vs a numpy/scipy reference
    labctl bench coincidence [--json]     time-tag histogram vs numpy/pycorrelate, PTU decoding
    labctl bench predictors [--json]      drift predictors: RMSE, step latency, duty cycle at
                                          equal QBER against scan-and-transmit
    labctl bench gui [--json]             frames/s of 1e6-point live traces while the DSP runs
    labctl bench record [--json]          recorder vs plain h5py writes (MB/s, overhead); replay
                                          throughput, one process vs a 2-worker Dask cluster
    labctl replay FILE.h5 ... [--json]    a recording through the live pipeline, compared with
                                          the recorded results (several files: on Dask)
    labctl replay FILE.ptu [--json]       singles, coincidences, CAR of a PicoQuant PTU file
    labctl gui [CONFIG | FILE.h5]         the Qt dashboard: a bench live, or a recording replayed
    labctl calc qsm ...                   quantum secure metrology planning
    labctl calc locate ...                locate a vibration source from arrival times
    labctl calc cv-skr ...                CV-QKD asymptotic secret key rate
    labctl calc bbm92 ...                 BBM92 asymptotic secret key rate
    labctl calc plan-channels ...         channel plan of the entanglement network

With no CONFIG every command uses the shipped simulated ISAQN bench
(``configs/isaqn_sim.toml``) and starts its simulators itself. Errors are one
line on stderr (``--debug`` shows the traceback); progress goes to stderr so
``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.errors import InstrumentError
from labctl import (
    autotune_job,
    bench_coincidence,
    bench_gui,
    bench_isaqn,
    bench_predictors,
    bench_record,
    calc_cvqkd,
    calc_entanglement,
    calc_locate,
    calc_qsm,
    gui_cli,
    replay_cli,
)
from labctl.bench import Bench, start_simulators
from labctl.config import BenchConfig, ConfigError, load_bench
from labctl.h5record import RecorderError

if TYPE_CHECKING:
    from labctl.entangle_status import EntanglementStatus
    from labctl.isaqn_feed import Record
    from labctl.isaqn_status import NetworkStatus


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stop_on_ctrl_c(what: str) -> tuple[threading.Event, Any]:
    """Install a SIGINT handler: the first Ctrl-C sets the returned event (and says ``what``
    happens), a second one aborts at once. Returns (event, previous handler): restore it with
    ``signal.signal(signal.SIGINT, previous)``."""
    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        _progress(f"{what} (Ctrl-C again to abort)")
        stop.set()

    return stop, signal.signal(signal.SIGINT, interrupt)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="bench file (TOML); default: the shipped simulated bench",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labctl", description="Lab control and streaming DSP for quantum-optics benches."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sim", help="start the simulators of a bench and keep them running")
    _add_config(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON line of resources when ready"
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="stop after this many seconds (default: until interrupted)",
    )
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("instruments", help="connect to each instrument, print identity and state")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_instruments)

    p = sub.add_parser(
        "run",
        help="run the main job on a bench and record it (ISAQN: acquire, analyse, display; "
        "entanglement: time tags, coincidences, Franson scans, BBM92 per user pair)",
    )
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        dest="duration_s",
        metavar="S",
        help="stop after S seconds of data (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE.h5",
        help="the HDF5 recording of raw data, results and settings "
        "(default: runs/<bench>-<UTC time>.h5; format in docs/recording.md)",
    )
    p.add_argument("--no-record", action="store_true", help="do not record (display only)")
    p.add_argument(
        "--flush",
        type=float,
        default=1.0,
        dest="flush_s",
        metavar="S",
        help="commit the recording every S seconds (readers see it, a crash keeps it; default 1)",
    )
    p.add_argument("--plain", action="store_true", help="plain text updates even on a terminal")
    p.add_argument(
        "--no-loops",
        action="store_true",
        help="entanglement: do not run the bench file's [[loops]] (the TEC's own PID holds the "
        "ring, the phase shifters are stepped open-loop); interlocks still run",
    )
    p.add_argument(
        "--interlock-log",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="entanglement: append every interlock trip, action and reset to this file",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "loops",
        help="run a bench file's feedback loops and interlocks with a live table "
        "(switches on the lasers its laser locks hold)",
    )
    _add_config(p)
    p.add_argument(
        "--loop",
        action="append",
        default=None,
        dest="only",
        metavar="NAME",
        help="run only this loop (repeatable; default: every loop with autostart)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        dest="duration_s",
        metavar="S",
        help="stop after S seconds of bench time (default: until Ctrl-C)",
    )
    p.add_argument("--update", type=float, default=1.0, dest="update_s", metavar="S")
    p.add_argument("--json", action="store_true", help="print the last status as JSON")
    p.add_argument("--plain", action="store_true", help="plain text updates even on a terminal")
    p.add_argument(
        "--interlock-log",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="append every interlock trip, action and reset to this file",
    )
    p.set_defaults(func=cmd_loops)

    p = sub.add_parser("bench", help="benchmarks: labctl against a numpy/scipy reference")
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    bench_isaqn.add_parser(bench_sub)
    bench_coincidence.add_parser(bench_sub)
    bench_predictors.add_parser(bench_sub)
    bench_gui.add_parser(bench_sub)
    bench_record.add_parser(bench_sub)

    replay_cli.add_parser(sub)
    gui_cli.add_parser(sub)
    autotune_job.add_parser(sub)

    p = sub.add_parser("calc", help="calculators")
    calc_sub = p.add_subparsers(dest="calc_command", required=True, metavar="CALC")
    calc_qsm.add_parser(calc_sub)
    calc_locate.add_parser(calc_sub)
    calc_cvqkd.add_parser(calc_sub)
    calc_entanglement.add_parsers(calc_sub)
    return parser


# ---------------------------------------------------------------------------
def cmd_sim(args: argparse.Namespace) -> int:
    config = load_bench(args.config)
    _progress(f"starting {len(config.instruments)} simulators of bench {config.name!r}")
    host = start_simulators(config, all_instruments=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        table = {
            name: {
                "class": icfg.instrument_class,
                "model": icfg.model,
                "resource": host.resources[name],
            }
            for name, icfg in config.instruments.items()
        }
        if args.json:
            print(json.dumps(table), flush=True)
        else:
            for name, row in table.items():
                print(f"{name:12s} {row['class']:6s} {row['model']:20s} {row['resource']}")
            _progress("simulators running; Ctrl-C to stop")
        # in slices: a signal handler only runs between waits (a single unbounded wait was
        # seen to miss a SIGTERM and hang)
        deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
        while not stop.wait(0.25):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        host.stop()
    return 0


def _format_state(state: dict[str, Any]) -> str:
    parts = []
    for key, value in state.items():
        if isinstance(value, dict):
            value = ", ".join(f"{ch}:{v}" for ch, v in value.items())
            parts.append(f"{key}=[{value}]")
        else:
            parts.append(f"{key}={value}")
    return "  ".join(parts)


def cmd_instruments(args: argparse.Namespace) -> int:
    config = load_bench(args.config)
    with Bench(config) as bench:
        bench.connect(progress=_progress)
        states = bench.states()
        # reading state changes nothing: leave the instruments as found
        bench.close(safe=False)
    if args.json:
        print(json.dumps(states, default=str))
    else:
        for name, info in states.items():
            print(f"{name} ({info['class']}, {info['model']}) {info['identity']}")
            print(f"    {_format_state(info['state'])}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_bench(args.config)
    _progress(f"bench {config.name!r}: {config.description}")
    if config.isaqn is not None:
        return _run_isaqn(args, config)
    if config.entanglement is not None:
        return _run_entanglement(args, config)
    from labctl.run_record import GENERIC_FORMAT, RunRecorder

    path = _recording_path(args, config)
    recorder = None
    try:
        with Bench(config) as bench:
            bench.connect(progress=_progress)
            before = bench.states()
            if path is not None:
                recorder = RunRecorder(
                    path, config, GENERIC_FORMAT, [], flush_interval_s=args.flush_s
                )
                recorder.attach(bench.instruments)  # the safe start's writes are logged
            bench.apply_safe_start(progress=_progress)
            after = bench.states()
    finally:
        if recorder is not None:
            recorder.close()
    _report_recording(path, [] if recorder is None else [recorder])
    summary = {
        "bench": config.name,
        "config": str(config.path),
        "instruments": {
            name: {
                "identity": before[name]["identity"],
                "state_at_start": before[name]["state"],
                "state_after_safe_start": after[name]["state"],
            }
            for name in before
        },
    }
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        for name, info in summary["instruments"].items():
            print(f"{name}: {info['identity']}")
            print(f"    {_format_state(info['state_after_safe_start'])}")
        print(f"run finished: {len(before)} instruments connected, safe start applied, closed")
    return 0


def _recording_path(args: argparse.Namespace, config: BenchConfig) -> Path | None:
    """Where ``labctl run`` records (None with --no-record); refused before anything starts
    if the file exists (recordings are never overwritten)."""
    if args.no_record:
        return None
    if not args.flush_s > 0:
        raise CliError(f"--flush {args.flush_s}: expected a time > 0 s")
    path = args.output or Path("runs") / (
        f"{config.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.h5"
    )
    if path.exists():
        raise CliError(f"--output {path}: exists; recordings are never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _recorder_alarm(exc: Exception) -> None:
    """The recorder's overruns and failure: said loudly on stderr, as they happen."""
    print(f"labctl: RECORDING: {exc}", file=sys.stderr, flush=True)


def _close_recorders(recorders: Sequence[Any]) -> list[RecorderError]:
    """Close every recorder (committing what it holds); their failures, already said."""
    failed = []
    for recorder in recorders:
        try:
            recorder.close()
        except RecorderError as exc:
            _recorder_alarm(exc)
            failed.append(exc)
    return failed


def _report_recording(path: Path | None, recorders: Sequence[Any]) -> None:
    for recorder in recorders:
        lost = f", {recorder.overrun_rows} rows NOT recorded (disk too slow)"
        _progress(f"recorded {path}{lost if recorder.overrun_rows else ''}")


def _run_isaqn(args: argparse.Namespace, config: BenchConfig) -> int:
    """The ISAQN main job: live display, HDF5 recording, Ctrl-C ends it cleanly."""
    from labctl.isaqn_display import LiveDisplay
    from labctl.isaqn_job import IsaqnJob, JobError, run_isaqn
    from labctl.isaqn_record import IsaqnRecorder

    path = _recording_path(args, config)
    stop, previous = _stop_on_ctrl_c("stopping after the current record")
    recorders: list[IsaqnRecorder] = []
    display = LiveDisplay(plain=True if args.plain or args.json else None)

    def recording(job: IsaqnJob) -> Callable[[Record], None]:
        assert path is not None
        recorder = IsaqnRecorder(
            path,
            config,
            wavelength_nm=job.wavelength_nm,
            flush_interval_s=args.flush_s,
            on_error=_recorder_alarm,
        )
        recorders.append(recorder)
        recorder.attach(job.bench.instruments)
        _progress(f"recording to {path}")
        return recorder.record

    def status_to_recorder(status: NetworkStatus) -> None:
        if recorders:
            recorders[0].status(status)

    last = None
    try:
        display.start()
        last, info = run_isaqn(
            config,
            duration_s=args.duration_s,
            sinks=[display, status_to_recorder],
            progress=_progress,
            record_sink_factory=None if path is None else recording,
            stop=stop,
        )
    except (JobError, RecorderError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        display.stop()
        failed = _close_recorders(recorders)
        signal.signal(signal.SIGINT, previous)
    if failed:
        raise CliError(f"the recording failed: {failed[0]}")
    _progress(
        f"run finished{' (Ctrl-C)' if stop.is_set() else ''}: {info['records']} records, "
        f"{info['overloads']} overloads; instruments left safe (outputs off, laser off)"
    )
    _report_recording(path, recorders)
    if args.json:
        print(json.dumps(last.to_dict() if last is not None else None))
    return 0


def _run_entanglement(args: argparse.Namespace, config: BenchConfig) -> int:
    """The entanglement network's main job: live per-pair table, Ctrl-C ends it cleanly."""
    from labctl.entangle_display import EntanglementDisplay
    from labctl.entangle_job import EntanglementJob, JobError, run_entanglement
    from labctl.entangle_record import EntanglementRecorder

    path = _recording_path(args, config)
    stop, previous = _stop_on_ctrl_c("stopping after the current read")
    display = EntanglementDisplay(plain=True if args.plain or args.json else None)
    recorders: list[EntanglementRecorder] = []

    def recording(job: EntanglementJob) -> None:
        if path is None:
            return
        recorder = EntanglementRecorder.for_job(
            path, job, flush_interval_s=args.flush_s, on_error=_recorder_alarm
        )
        recorders.append(recorder)
        _progress(f"recording to {path}")

    def status_to_recorder(status: EntanglementStatus) -> None:
        if recorders:
            recorders[0].status(status)

    try:
        display.start()
        last, info = run_entanglement(
            config,
            duration_s=args.duration_s,
            sinks=[display, status_to_recorder],
            progress=_progress,
            stop=stop,
            loops=not args.no_loops,
            interlock_log=args.interlock_log,
            job_hook=recording,
        )
    except (JobError, RecorderError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        display.stop()
        failed = _close_recorders(recorders)
        signal.signal(signal.SIGINT, previous)
    if failed:
        raise CliError(f"the recording failed: {failed[0]}")
    _progress(
        f"run finished{' (Ctrl-C)' if stop.is_set() else ''}: {info['scans']} phase scans, "
        f"{info['lost_events']} lost events; instruments left safe (pumps off, phase shifters "
        "off, TEC ramped down and off, streams stopped)"
    )
    _report_recording(path, recorders)
    if args.json:
        print(json.dumps(last.to_dict() if last is not None else None))
    return 0


def cmd_loops(args: argparse.Namespace) -> int:
    """The bench's loops and interlocks until --duration or Ctrl-C; actuators handed back."""
    from labctl.loops_display import LoopsDisplay
    from labctl.loops_job import LoopsJobError, run_loops

    config = load_bench(args.config)
    stop, previous = _stop_on_ctrl_c("stopping the loops")
    display = LoopsDisplay(plain=True if args.plain or args.json else None)
    try:
        display.start()
        last = run_loops(
            config,
            duration_s=args.duration_s,
            only=args.only,
            update_s=args.update_s,
            sinks=[display],
            progress=_progress,
            stop=stop,
            interlock_log=args.interlock_log,
        )
    except (LoopsJobError, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from exc
    finally:
        display.stop()
        signal.signal(signal.SIGINT, previous)
    _progress("loops stopped; actuators handed back, instruments left safe")
    if args.json:
        print(json.dumps(last.to_dict() if last is not None else None, default=str))
    return 0


# ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, InstrumentError, CliError, RecorderError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"labctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("labctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
