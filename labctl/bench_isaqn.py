"""``labctl bench isaqn``: throughput and memory of the ISAQN receiver chain.

Registered by the top-level CLI with ``bench_isaqn.add_parser(bench_sub)``.

One run generates a synthetic capture (:func:`dsp.receiver.synthetic_capture`: 3 nodes at 100,
200, 300 MHz, fs 1 GS/s, 50 MBd, a pilot every 10 symbols, node 0 vibrating with 890 rad peak)
and runs the full per-node chain (band separation, demodulation, decimation, symbol sampling,
pilot phase, unwrap, interpolation and rotation) on it

* with labctl (:class:`dsp.receiver.ReceiverChain`, fed in blocks as a stream, results
  consumed block by block), on 1 and on 2 threads;
* with the straightforward numpy/scipy implementation of the same chain
  (:func:`dsp.receiver.reference_chain`: ``np.exp`` mixing, ``lfilter``, slicing, ``np.angle``,
  ``np.unwrap``, ``np.interp``), and for comparison its ``upfirdn`` variant (polyphase, only
  the kept outputs), on the first ``--reference-samples`` samples when that is shorter;
* the DDC alone with each method (frequency-translating FIR and polyphase channelizer), the
  measurement behind the choice of method.

Throughput is samples of raw complex input per second. *Per core* divides by the process CPU
time (``time.process_time``), which on a shared machine is robust against being descheduled;
the 2-thread figure is per wall-clock second. The best of ``--repeat`` runs is reported, after
a warm-up that compiles (or loads from cache) every Numba kernel.

Peak memory is the growth of the process's peak resident set from just before the capture is
generated to the end of the labctl runs (before the reference runs, whose complex128
temporaries would dominate it). On Linux the high-water mark is reset first
(``/proc/self/clear_refs``) and read back as ``VmHWM``; elsewhere the growth of ``ru_maxrss``
is used. It counts the capture itself, the generator's ground truth and every processing
temporary, whether numpy or Numba allocated it. (RSS is page-granular and a small capture may
reuse pages freed earlier, so the figure is meaningful for large captures, e.g. 2**26.)
The ``tracemalloc`` peak of a separate labctl pass (numpy allocations only; the chain allocates
its arrays with numpy) is reported as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from dsp.ddc import DDCConfig, DDCState, Method, ddc_process
from dsp.receiver import (
    ReceiverChain,
    default_taps,
    reference_chain,
    synthetic_capture,
)

_PROG = "labctl bench isaqn"
FS_HZ = 1.0e9
CARRIERS_HZ = (100e6, 200e6, 300e6)
SYMBOL_RATE_HZ = 50e6
PILOT_PERIOD = 10
VIBRATION_PEAK_RAD = 890.0
VIBRATION_HZ = 1.0e3
TARGET_MSPS_PER_CORE = 300.0
TARGET_RATIO = 50.0
TARGET_MEMORY_RATIO = 3.0


def add_parser(bench_subparsers: Any) -> None:
    """Register the ``isaqn`` sub-command on an argparse sub-parsers object."""
    parser = bench_subparsers.add_parser(
        "isaqn",
        help="throughput and memory of the ISAQN receiver chain vs a numpy/scipy reference",
        description=(
            "Run the per-node ISAQN chain (band separation, demodulation, decimation, pilot "
            "phase, unwrap) for 3 bands on one synthetic capture with labctl and with a "
            "straightforward numpy/scipy implementation; print MS/s per core, their ratio, "
            "the 2-thread figure and peak memory."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--samples",
        type=int,
        default=1 << 24,
        help="raw complex samples in the capture (default 2**24; 67108864 for the memory "
        "figure of a 2**26-sample capture)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per measurement, best kept (default 3)"
    )
    parser.add_argument(
        "--block",
        type=int,
        default=1 << 20,
        help="samples per block fed to the streaming chain (default 2**20)",
    )
    parser.add_argument(
        "--reference-samples",
        type=int,
        default=1 << 21,
        help="measure the (slow, complex128) reference on at most this many samples of the "
        "same capture (default 2**21)",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "ftf", "pfb"),
        default="auto",
        help="DDC method of the labctl chain (default auto: ftf for 3 bands)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed of the capture")
    parser.set_defaults(func=run_bench_isaqn)


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _PeakRss:
    """Peak resident-set growth of this process over a section of code.

    Linux: reset the high-water mark (``echo 5 > /proc/self/clear_refs``), then peak = VmHWM -
    VmRSS at the start. Elsewhere (or if the reset is refused): growth of ``ru_maxrss``, which
    reads 0 when the process had already peaked higher before the section.
    """

    def __init__(self) -> None:
        self.method = "VmHWM after reset (/proc/self/clear_refs), minus VmRSS at start"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            start = _proc_status_bytes("VmRSS")
        except OSError:
            start = None
        if start is None:
            self.method = "ru_maxrss growth"
            start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        self.start = start

    def peak(self) -> int:
        if self.method == "ru_maxrss growth":
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            now = _proc_status_bytes("VmHWM") or 0
        return max(0, now - self.start)


def _phases() -> list[Any]:
    return [
        lambda t: 0.3 + VIBRATION_PEAK_RAD * np.sin(2 * np.pi * VIBRATION_HZ * t),
        1.0,
        lambda t: -2.0 + 2.0e3 * t,
    ]


def _stream(chain: ReceiverChain, capture: np.ndarray, block: int) -> dict[str, Any]:
    """Feed the capture block by block, consuming each block's results (keep the pilots)."""
    chain.reset()
    pilots: list[list[np.ndarray]] = [[] for _ in range(chain.n_bands)]
    index: list[list[np.ndarray]] = [[] for _ in range(chain.n_bands)]
    n_symbols = 0
    for start in range(0, capture.size, block):
        res = chain.process(capture[start : start + block])
        for b, r in res.items():
            pilots[b].append(r["pilot_phase_rad"])
            index[b].append(r["pilot_index"])
            n_symbols += r["symbols"].size
    for r in chain.flush().values():
        n_symbols += r["symbols"].size
    return {
        "pilot_phase": [np.concatenate(p) for p in pilots],
        "pilot_index": [np.concatenate(i) for i in index],
        "quantum_symbols": n_symbols,
    }


def _best(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """(best CPU seconds, best wall seconds, last result) over ``repeat`` calls."""
    cpu, wall, result = [], [], None
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall), result


def _ddc_only(capture: np.ndarray, method: Method, block: int, repeat: int) -> float:
    """Throughput (MS/s per core) of the DDC alone, one output per symbol."""
    sps = round(FS_HZ / SYMBOL_RATE_HZ)
    cfg = DDCConfig(FS_HZ, CARRIERS_HZ, default_taps(FS_HZ, SYMBOL_RATE_HZ), sps, method)

    def run() -> None:
        state = DDCState.initial(cfg)
        for start in range(0, capture.size, block):
            _, state = ddc_process(capture[start : start + block], state, cfg)

    run()  # compile / warm
    cpu, _, _ = _best(run, repeat)
    return capture.size / cpu / 1e6


def measure(args: argparse.Namespace, progress: Any = None) -> dict[str, Any]:
    """Run the benchmark and return the figures (see the module docstring)."""

    def say(msg: str) -> None:
        if progress:
            progress(msg)

    n = int(args.samples)
    block = int(args.block)
    rng = np.random.default_rng(args.seed)
    chain1, chain2 = (
        ReceiverChain(
            FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD, method=args.method, threads=t
        )
        for t in (1, 2)
    )

    say("warm-up (JIT compile or cache load)")
    warm = synthetic_capture(1 << 16, FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD, None, rng)
    for chain in (chain1, chain2):
        _stream(chain, warm.samples, 1 << 14)
    reference_chain(warm.samples, FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD)

    rss = _PeakRss()
    say(f"generating a {n}-sample capture")
    cap = synthetic_capture(n, FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD, _phases(), rng)
    x = cap.samples

    say("labctl, 1 thread")
    cpu1, wall1, res = _best(lambda: _stream(chain1, x, block), args.repeat)
    say("labctl, 2 threads")
    _, wall2, _ = _best(lambda: _stream(chain2, x, block), args.repeat)
    rss_peak = rss.peak()

    tracemalloc.start()
    tracemalloc.reset_peak()
    _stream(chain1, x, block)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    truth = cap.phase_rad(0, cap.symbol_time_s(res["pilot_index"][0]))
    err = res["pilot_phase"][0] - truth
    phase_rms = float(np.sqrt(np.mean(err**2))) if err.size else float("nan")
    max_jump = float(np.max(np.abs(np.diff(res["pilot_phase"][0])))) if err.size > 1 else 0.0

    n_ref = min(n, int(args.reference_samples))
    xr = x[:n_ref]
    say(f"reference (numpy/scipy lfilter) on {n_ref} samples")
    cpu_ref, _, _ = _best(
        lambda: reference_chain(xr, FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD),
        args.repeat,
    )
    say(f"reference (numpy/scipy upfirdn) on {n_ref} samples")
    cpu_up, _, _ = _best(
        lambda: reference_chain(
            xr, FS_HZ, CARRIERS_HZ, SYMBOL_RATE_HZ, PILOT_PERIOD, ddc_method="upfirdn"
        ),
        args.repeat,
    )
    say("DDC alone: frequency-translating FIR vs polyphase channelizer")
    n_ddc = min(n, 1 << 24)
    methods: tuple[Method, ...] = ("ftf", "pfb")
    ddc = {m: _ddc_only(x[:n_ddc], m, block, args.repeat) for m in methods}

    labctl = n / cpu1 / 1e6
    ref = n_ref / cpu_ref / 1e6
    ref_up = n_ref / cpu_up / 1e6
    capture_bytes = x.nbytes
    out = {
        "samples": n,
        "capture_bytes": capture_bytes,
        "block_samples": block,
        "bands": len(CARRIERS_HZ),
        "fs_hz": FS_HZ,
        "carriers_hz": list(CARRIERS_HZ),
        "symbol_rate_hz": SYMBOL_RATE_HZ,
        "pilot_period": PILOT_PERIOD,
        "n_taps": int(chain1.ddc_config.taps.size),
        "method": chain1.ddc_config.resolved_method,
        "labctl_msps_per_core": labctl,
        "labctl_msps_wall": n / wall1 / 1e6,
        "threads_2_msps": n / wall2 / 1e6,
        "reference_msps_per_core": ref,
        "reference_method": "np.exp mix + scipy.signal.lfilter + slice + np.unwrap",
        "reference_samples": n_ref,
        "reference_upfirdn_msps_per_core": ref_up,
        "ratio": labctl / ref,
        "ratio_vs_upfirdn": labctl / ref_up,
        "peak_memory_bytes": int(rss_peak),
        "peak_memory_ratio": rss_peak / capture_bytes,
        "peak_memory_method": rss.method + ", from before the capture is generated",
        "peak_traced_bytes": int(traced_peak),
        "ddc_only_msps_per_core": ddc,
        "quantum_symbols": int(res["quantum_symbols"]),
        "pilot_phase_rms_error_rad": phase_rms,
        "pilot_phase_max_step_rad": max_jump,
        "cpus": os.cpu_count(),
    }
    out["targets_met"] = {
        "msps_per_core": labctl >= TARGET_MSPS_PER_CORE,
        "ratio": out["ratio"] >= TARGET_RATIO,
        "memory": out["peak_memory_ratio"] <= TARGET_MEMORY_RATIO,
    }
    return out


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _summary(r: dict[str, Any]) -> str:
    ok = {True: "ok", False: "MISSED"}
    t = r["targets_met"]
    ref_note = (
        f" (on the first {r['reference_samples']} samples)"
        if r["reference_samples"] < r["samples"]
        else ""
    )
    lines = [
        f"labctl bench isaqn: {r['bands']} bands at "
        f"{', '.join(f'{f / 1e6:g}' for f in r['carriers_hz'])} MHz, fs {r['fs_hz'] / 1e9:g} GS/s, "
        f"{r['symbol_rate_hz'] / 1e6:g} MBd, pilot every {r['pilot_period']}, "
        f"{r['n_taps']} taps, DDC method {r['method']}",
        f"capture {r['samples']} samples ({_mib(r['capture_bytes'])} complex64), "
        f"blocks of {r['block_samples']}, {r['cpus']} CPUs",
        "",
        f"{'':34s}{'MS/s per core':>15s}{'MS/s wall':>12s}",
        f"{'labctl, 1 thread':34s}{r['labctl_msps_per_core']:15.1f}{r['labctl_msps_wall']:12.1f}",
        f"{'labctl, 2 threads':34s}{'':15s}{r['threads_2_msps']:12.1f}",
        f"{'reference numpy/scipy (lfilter)':34s}{r['reference_msps_per_core']:15.2f}{ref_note}",
        f"{'reference numpy/scipy (upfirdn)':34s}{r['reference_upfirdn_msps_per_core']:15.2f}",
        "",
        f"ratio labctl / reference: {r['ratio']:.0f}x (vs the upfirdn variant: "
        f"{r['ratio_vs_upfirdn']:.0f}x)  target >= {TARGET_RATIO:g}x: {ok[t['ratio']]}",
        f"labctl per core: {r['labctl_msps_per_core']:.0f} MS/s  "
        f"target >= {TARGET_MSPS_PER_CORE:g}: {ok[t['msps_per_core']]}",
        f"peak memory: {_mib(r['peak_memory_bytes'])} = {r['peak_memory_ratio']:.2f} x capture "
        f"(peak RSS growth, capture included; tracemalloc peak of the chain alone "
        f"{_mib(r['peak_traced_bytes'])})  target <= {TARGET_MEMORY_RATIO:g}x: {ok[t['memory']]}",
        "DDC alone, MS/s per core: "
        + ", ".join(f"{m} {v:.0f}" for m, v in r["ddc_only_msps_per_core"].items()),
        f"sanity: node 0 pilot phase rms error {r['pilot_phase_rms_error_rad']:.3f} rad, "
        f"largest step between pilots {r['pilot_phase_max_step_rad']:.2f} rad",
    ]
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> str | None:
    if args.samples < 1 << 16:
        return f"--samples: got {args.samples}, expected >= 65536"
    if args.repeat < 1:
        return f"--repeat: got {args.repeat}, expected >= 1"
    if args.block < 1024:
        return f"--block: got {args.block}, expected >= 1024"
    if args.reference_samples < 1 << 16:
        return f"--reference-samples: got {args.reference_samples}, expected >= 65536"
    return None


def run_bench_isaqn(args: argparse.Namespace) -> int:
    """Execute ``labctl bench isaqn``; returns the exit code (0 ok, 2 usage)."""
    problem = _validate(args)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    result = measure(args, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result))
    else:
        print(_summary(result))
    return 0
