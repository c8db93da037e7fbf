"""``labctl bench coincidence``: throughput of the time-tag coincidence histogram.

Registered by the top-level CLI with ``bench_coincidence.add_parser(bench_sub)``; the work is
done by :func:`run_benchmark`, which returns the figures as a dict.

One run generates a synthetic two-channel tag stream (:func:`synthetic_stream`: Poisson tags
on channel 0 at ``rate_hz``; channel 1 carries the partners of ``pair_fraction`` of them, 1.5 ns
later with 50 ps rms jitter, plus Poisson tags up to the same rate; int64 ps, uint8 channels,
merged and sorted as a tagger delivers them) and histograms ``t_1 - t_0`` over +-10 ns in 10 ps
bins (2000 bins)

* with labctl (:func:`dsp.coincidence.coincidence_process`, the stream fed in blocks, state
  carried), and one-shot (:func:`dsp.coincidence.coincidence_histogram`) on 1 and on
  ``--threads`` threads (the stream cut into index chunks, each re-reading the 10 ns before
  it; Numba kernels release the GIL, ``concurrent.futures`` threads);
* with a straightforward numpy implementation (split the channels, two ``np.searchsorted``
  for each channel-0 tag's window, expand the pairs with ``np.repeat``, ``np.bincount``), on
  the first ``--reference-tags`` tags;
* with pycorrelate's ``pcorrelate`` (Numba, arbitrary lag bins; pip package ``pycorrelate``)
  on the first ``--pycorrelate-tags`` tags, if it can be imported (otherwise reported, not
  fatal).

The three histograms of the common prefix are compared bin by bin (``agree_*``).

Throughput is input tags (both channels) per second. *Per core* divides by the process CPU
time (``time.process_time``), robust against being descheduled on a shared machine; the
multi-thread figure is per wall-clock second (and its CPU-time figure shows the scaling
loss). The best of ``--repeat`` runs is kept, after a warm-up that compiles (or loads from
cache) every Numba kernel. The density of the stream matters: the kernel does one comparison
per tag plus one step per other tag within 10 ns (``tags_per_window`` is reported).

PTU decoding (PicoQuant files): :func:`measure_ptu`, labctl vs ptufile on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dsp.clocksync import merge_tags
from dsp.coincidence import (
    CoincidenceConfig,
    CoincidenceState,
    coincidence_histogram,
    coincidence_process,
)

_PROG = "labctl bench coincidence"
BIN_PS = 10
HALF_RANGE_PS = 10_000
DELAY_PS = 1_500
JITTER_PS = 50.0
TARGET_MTAGS_PER_CORE = 250.0
TARGET_RATIO = 10.0

Progress = Callable[[str], None]


def add_parser(bench_subparsers: Any) -> None:
    """Register the ``coincidence`` sub-command on an argparse sub-parsers object."""
    parser = bench_subparsers.add_parser(
        "coincidence",
        help="throughput of the 2-channel coincidence histogram vs numpy and pycorrelate",
        description=(
            "Histogram a synthetic 2-channel time-tag stream (+-10 ns, 10 ps bins) with labctl "
            "(streaming, one-shot, multi-thread), a straightforward numpy implementation and "
            "pycorrelate; print M tags/s per core and the ratios."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--tags", type=int, default=1 << 24, help="tags in the stream (default 2**24)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads of the multi-thread run (default 2)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per measurement, best kept (default 3)"
    )
    parser.add_argument(
        "--block",
        type=int,
        default=1 << 20,
        help="tags per batch fed to the streaming histogram (default 2**20)",
    )
    parser.add_argument(
        "--reference-tags",
        type=int,
        default=1 << 22,
        help="measure the numpy reference on at most this many tags (default 2**22)",
    )
    parser.add_argument(
        "--pycorrelate-tags",
        type=int,
        default=1 << 17,
        help="measure pycorrelate on at most this many tags (default 2**17; it is slow)",
    )
    parser.add_argument(
        "--rate-hz",
        type=float,
        default=2.0e6,
        help="tag rate per channel (default 2e6 /s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed of the stream")
    parser.set_defaults(func=run_bench_coincidence)


# ---------------------------------------------------------------------------------------------
# Stream and reference implementations


def synthetic_stream(
    n_tags: int,
    *,
    rate_hz: float = 2.0e6,
    pair_fraction: float = 0.1,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """A sorted 2-channel tag stream (int64 ps, uint8 channels) of about ``n_tags`` tags."""
    rng = np.random.default_rng(seed)
    n0 = n_tags // 2
    mean_gap_ps = 1e12 / rate_hz
    t0 = np.cumsum(rng.exponential(mean_gap_ps, n0)).astype(np.int64)
    span = int(t0[-1]) if n0 else 0
    paired = t0[rng.random(n0) < pair_fraction]
    partners = paired + DELAY_PS + np.rint(rng.normal(0.0, JITTER_PS, paired.size)).astype(np.int64)
    noise = rng.integers(0, max(span, 1), max(n_tags - n0 - paired.size, 0), dtype=np.int64)
    t1 = np.sort(np.concatenate([partners, noise]))
    return merge_tags(t0, np.zeros(t0.size, np.uint8), t1, np.ones(t1.size, np.uint8))


def numpy_histogram(
    t: np.ndarray,
    ch: np.ndarray,
    *,
    lo_ps: int = -HALF_RANGE_PS,
    bin_ps: int = BIN_PS,
    n_bins: int = 2 * HALF_RANGE_PS // BIN_PS,
) -> np.ndarray:
    """Straightforward numpy histogram of t_1 - t_0 (searchsorted windows + repeat + bincount)."""
    a = t[ch == 0]
    b = t[ch == 1]
    lo = np.searchsorted(b, a + lo_ps, side="left")
    hi = np.searchsorted(b, a + lo_ps + n_bins * bin_ps, side="left")
    cnt = hi - lo
    ia = np.repeat(np.arange(a.size), cnt)
    ib = np.arange(int(cnt.sum())) + np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
    dt = b[ib] - a[ia]
    return np.bincount((dt - lo_ps) // bin_ps, minlength=n_bins)


def _pycorrelate() -> tuple[Any, str | None]:
    try:
        import pycorrelate  # type: ignore[import-not-found]
    except Exception as exc:  # not installed or broken: reported, not fatal
        return None, f"{type(exc).__name__}: {exc}"
    return pycorrelate, None


def pycorrelate_histogram(pycorrelate: Any, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """pycorrelate.pcorrelate on the same bins, converted back to counts per bin."""
    a = t[ch == 0]
    b = t[ch == 1]
    edges = (-HALF_RANGE_PS + BIN_PS * np.arange(2 * HALF_RANGE_PS // BIN_PS + 1)).astype(np.int64)
    g = pycorrelate.pcorrelate(a, b, edges)  # counts / diff(bins)
    return np.rint(g * np.diff(edges)).astype(np.int64)


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best CPU seconds, best wall seconds, last result) over ``repeat`` calls."""
    cpu, wall, result = [], [], None
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall), result


def _stream(t: np.ndarray, ch: np.ndarray, cfg: CoincidenceConfig, block: int) -> np.ndarray:
    state = CoincidenceState.initial(cfg)
    counts = state.counts
    for s in range(0, t.size, block):
        counts, state = coincidence_process(t[s : s + block], ch[s : s + block], state, cfg)
    return counts.hist[0]


def measure_ptu(n_tags: int, progress: Progress | None = None) -> dict[str, Any] | None:
    """PTU decoding in M records/s, labctl vs ptufile, on one synthetic MultiHarp T2 file of
    ``min(n_tags, 4M)`` photons (:func:`labctl.ptu.decode_benchmark`)."""
    from labctl import ptu

    n = min(int(n_tags), 1 << 22)
    if progress:
        progress(f"PTU decoding: {n} Generic T2 records, labctl and ptufile")
    records, global_res_s, res_s = ptu.synthetic_records(n, ptu.RecordType.GENERIC_T2)
    return ptu.decode_benchmark(
        records,
        record_type=ptu.RecordType.GENERIC_T2,
        global_resolution_s=global_res_s,
        resolution_s=res_s,
        repeats=3,
    )


# ---------------------------------------------------------------------------------------------
# Benchmark


def run_benchmark(
    n_tags: int,
    threads: int = 2,
    *,
    repeat: int = 3,
    block: int = 1 << 20,
    reference_tags: int = 1 << 22,
    pycorrelate_tags: int = 1 << 17,
    rate_hz: float = 2.0e6,
    seed: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the figures (see the module docstring)."""

    def say(msg: str) -> None:
        if progress:
            progress(msg)

    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=BIN_PS, half_range_ps=HALF_RANGE_PS)
    say("warm-up (JIT compile or cache load)")
    wt, wc = synthetic_stream(1 << 14, rate_hz=rate_hz, seed=seed + 1)
    _stream(wt, wc, cfg, 1 << 12)
    coincidence_histogram(wt, wc, cfg, threads=max(1, threads))
    numpy_histogram(wt, wc)

    say(f"generating a {n_tags}-tag stream at {rate_hz:g} tags/s per channel")
    t, ch = synthetic_stream(n_tags, rate_hz=rate_hz, seed=seed)
    n = int(t.size)
    span_s = (int(t[-1]) - int(t[0])) * 1e-12 if n else 0.0
    tags_per_window = n / span_s * 2 * HALF_RANGE_PS * 1e-12 if span_s > 0 else 0.0

    say("labctl, streaming, 1 thread")
    cpu_s, wall_s, hist_stream = _best(lambda: _stream(t, ch, cfg, block), repeat)
    say("labctl, one-shot, 1 thread")
    cpu_1, _, counts_1 = _best(lambda: coincidence_histogram(t, ch, cfg), repeat)
    say(f"labctl, one-shot, {threads} threads")
    cpu_n, wall_n, counts_n = _best(
        lambda: coincidence_histogram(t, ch, cfg, threads=threads), repeat
    )
    same_threads = bool(np.array_equal(counts_1.hist, counts_n.hist)) and bool(
        np.array_equal(counts_1.hist[0], hist_stream)
    )

    n_ref = min(n, int(reference_tags))
    say(f"numpy reference on {n_ref} tags")
    cpu_ref, _, hist_ref = _best(lambda: numpy_histogram(t[:n_ref], ch[:n_ref]), repeat)
    ours_ref = coincidence_histogram(t[:n_ref], ch[:n_ref], cfg).hist[0]

    out: dict[str, Any] = {
        "tags": n,
        "rate_hz_per_channel": rate_hz,
        "span_s": span_s,
        "tags_per_window": tags_per_window,
        "bin_ps": BIN_PS,
        "half_range_ps": HALF_RANGE_PS,
        "bins": cfg.n_bins,
        "block_tags": block,
        "coincidences": int(counts_1.hist.sum()),
        "labctl_mtags_per_core": n / cpu_s / 1e6,
        "labctl_mtags_wall": n / wall_s / 1e6,
        "labctl_oneshot_mtags_per_core": n / cpu_1 / 1e6,
        "threads": threads,
        "threads_mtags_wall": n / wall_n / 1e6,
        "threads_mtags_per_cpu_second": n / cpu_n / 1e6,
        "threads_agree": same_threads,
        "numpy_tags": n_ref,
        "numpy_mtags_per_core": n_ref / cpu_ref / 1e6,
        "numpy_method": "split channels + 2x np.searchsorted + np.repeat + np.bincount",
        "agree_numpy": bool(np.array_equal(ours_ref, hist_ref)),
    }
    out["ratio_vs_numpy"] = out["labctl_mtags_per_core"] / out["numpy_mtags_per_core"]

    pyc, err = _pycorrelate()
    n_pyc = min(n, int(pycorrelate_tags))
    out["pycorrelate_available"] = pyc is not None
    out["pycorrelate_error"] = err
    out["pycorrelate_tags"] = n_pyc
    if pyc is not None:
        try:
            say(f"pycorrelate on {n_pyc} tags (warm-up compiles it)")
            pycorrelate_histogram(pyc, wt, wc)
            cpu_pyc, _, hist_pyc = _best(
                lambda: pycorrelate_histogram(pyc, t[:n_pyc], ch[:n_pyc]), repeat
            )
            ours_pyc = coincidence_histogram(t[:n_pyc], ch[:n_pyc], cfg).hist[0]
            out["pycorrelate_version"] = getattr(pyc, "__version__", "?")
            out["pycorrelate_mtags_per_core"] = n_pyc / cpu_pyc / 1e6
            out["ratio_vs_pycorrelate"] = (
                out["labctl_mtags_per_core"] / out["pycorrelate_mtags_per_core"]
            )
            out["agree_pycorrelate"] = bool(np.array_equal(ours_pyc, hist_pyc))
        except Exception as exc:  # a broken install must not sink the benchmark
            out["pycorrelate_available"] = False
            out["pycorrelate_error"] = f"{type(exc).__name__}: {exc}"
    if not out["pycorrelate_available"]:
        out["pycorrelate_mtags_per_core"] = None
        out["ratio_vs_pycorrelate"] = None
        out["agree_pycorrelate"] = None

    out["ptu"] = measure_ptu(n, progress)
    out["cpus"] = os.cpu_count()
    out["targets_met"] = {
        "mtags_per_core": out["labctl_mtags_per_core"] >= TARGET_MTAGS_PER_CORE,
        "ratio_vs_numpy": out["ratio_vs_numpy"] >= TARGET_RATIO,
    }
    return out


def _summary(r: dict[str, Any]) -> str:
    ok = {True: "ok", False: "MISSED"}
    t = r["targets_met"]
    threads_label = f"labctl, one-shot ({r['threads']} threads, per CPU s)"
    lines = [
        f"labctl bench coincidence: 2 channels at {r['rate_hz_per_channel'] / 1e6:g} M tags/s "
        f"each, t_1 - t_0 over +-{r['half_range_ps'] / 1000:g} ns in {r['bin_ps']} ps bins "
        f"({r['bins']} bins)",
        f"stream {r['tags']} tags over {r['span_s']:.2f} s, {r['tags_per_window']:.3f} tags per "
        f"20 ns window, {r['coincidences']} pairs histogrammed, {r['cpus']} CPUs",
        "",
        f"{'':38s}{'M tags/s per core':>18s}{'M tags/s wall':>15s}",
        f"{'labctl, streaming (1 thread)':38s}{r['labctl_mtags_per_core']:18.1f}"
        f"{r['labctl_mtags_wall']:15.1f}",
        f"{'labctl, one-shot (1 thread)':38s}{r['labctl_oneshot_mtags_per_core']:18.1f}",
        f"{threads_label:38s}"
        f"{r['threads_mtags_per_cpu_second']:18.1f}{r['threads_mtags_wall']:15.1f}",
        f"{'numpy searchsorted reference':38s}{r['numpy_mtags_per_core']:18.2f}"
        f"  (on {r['numpy_tags']} tags)",
    ]
    if r["pycorrelate_available"]:
        lines.append(
            f"{'pycorrelate ' + str(r.get('pycorrelate_version', '')):38s}"
            f"{r['pycorrelate_mtags_per_core']:18.3f}  (on {r['pycorrelate_tags']} tags)"
        )
    else:
        lines.append(f"{'pycorrelate':38s}{'n/a':>18s}  ({r['pycorrelate_error']})")
    lines += [
        "",
        f"ratio labctl / numpy: {r['ratio_vs_numpy']:.1f}x  target >= {TARGET_RATIO:g}x: "
        f"{ok[t['ratio_vs_numpy']]}",
    ]
    if r["ratio_vs_pycorrelate"] is not None:
        lines.append(f"ratio labctl / pycorrelate: {r['ratio_vs_pycorrelate']:.0f}x")
    lines += [
        f"labctl per core: {r['labctl_mtags_per_core']:.0f} M tags/s  target >= "
        f"{TARGET_MTAGS_PER_CORE:g}: {ok[t['mtags_per_core']]}",
        f"histograms identical: numpy {r['agree_numpy']}, pycorrelate {r['agree_pycorrelate']}, "
        f"streaming/threads {r['threads_agree']}",
    ]
    p = r["ptu"]
    if p is None:
        lines.append("PTU decoding: not measured")
    elif p.get("ptufile_mrec_s") is None:
        lines.append(f"PTU decoding: labctl {p['labctl_mrec_s']:.0f} M records/s (ptufile absent)")
    else:
        lines.append(
            f"PTU decoding (M records/s): labctl {p['labctl_mrec_s']:.0f}, ptufile "
            f"{p['ptufile_mrec_s']:.0f}, ratio {p['ratio']:.2f}x  target >= 1: "
            f"{'ok' if p['ratio'] >= 1 else 'MISSED'}"
        )
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> str | None:
    if args.tags < 1 << 14:
        return f"--tags: got {args.tags}, expected >= 16384"
    if args.threads < 1:
        return f"--threads: got {args.threads}, expected >= 1"
    if args.repeat < 1:
        return f"--repeat: got {args.repeat}, expected >= 1"
    if args.block < 1024:
        return f"--block: got {args.block}, expected >= 1024"
    if args.reference_tags < 1 << 14:
        return f"--reference-tags: got {args.reference_tags}, expected >= 16384"
    if args.pycorrelate_tags < 1 << 10:
        return f"--pycorrelate-tags: got {args.pycorrelate_tags}, expected >= 1024"
    if not args.rate_hz > 0:
        return f"--rate-hz: got {args.rate_hz}, expected > 0"
    return None


def run_bench_coincidence(args: argparse.Namespace) -> int:
    """Execute ``labctl bench coincidence``; returns the exit code (0 ok, 2 usage)."""
    problem = _validate(args)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    result = run_benchmark(
        args.tags,
        args.threads,
        repeat=args.repeat,
        block=args.block,
        reference_tags=args.reference_tags,
        pycorrelate_tags=args.pycorrelate_tags,
        rate_hz=args.rate_hz,
        seed=args.seed,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(_summary(result))
    return 0
