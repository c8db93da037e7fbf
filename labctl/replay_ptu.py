"""``labctl replay FILE.ptu``: singles, coincidence peaks, accidentals and CAR of a PTU file.

Registered by the top-level CLI with ``replay_ptu.add_parser(sub)``. Decoding is
:mod:`labctl.ptu` (every PicoQuant T2/T3 record type, wraps carried across blocks); counting is
the streaming engine of :mod:`dsp.coincidence`. This module only parses, streams and formats.

Streaming
---------
The file is read twice, ``--batch-records`` records at a time (:func:`labctl.ptu.iter_ptu`),
never as one array:

1. a census: records, photons and markers, singles per channel, first and last photon;
2. the coincidence pass: every photon goes through :func:`dsp.coincidence.coincidence_process`
   with the state carried from batch to batch, histogramming ``t_b - t_a`` of each pair.

T3 photons are in sync-count order, so ``timestamp_ps`` can step back within a sync period
across a block boundary; photons at or after a block's ``horizon_ps`` are held back and merged
(stable sort) with the next block, so the engine sees one time-sorted stream whatever the batch
size. The output does not depend on ``--batch-records`` (tested).

Numbers
-------
* duration: last minus first photon (the engine's observation span, no dead time: a PTU file
  does not record buffer overflows as intervals); the header's ``MeasDesc_AcquisitionTime``
  (ms), when present, is reported next to it. Rates are counts / duration.
* pairs: every unordered pair (a < b) of channels with photons, histogram of ``t_b - t_a``, or
  the ordered pairs given with ``--pair A,B``.
* histogram: ``[-range, +range)`` in bins of ``--bin-ps``. The default bin is the smallest
  multiple of the file's time resolution (T2 global resolution, T3 start-stop bin width) that
  is at least 10 ps: delays are multiples of that resolution, so a bin that is not a multiple
  of it would hold a varying number of possible delays (a comb artefact); 10 ps resolves the
  50-500 ps FWHM of single-photon detectors with many bins across the peak. The default
  range +-20 ns covers several metres of cable/fibre delay difference and leaves ~30
  off-peak windows of the default width for the accidentals.
* delay: :func:`dsp.coincidence.peak_delay` (box-smoothed maximum, background-subtracted
  centroid). ``peak_significance`` (its counts over sqrt of the box counts) below 5 marks the
  peak as not found (``peak_found`` false): the numbers are still printed but describe the
  highest noise bump.
* window: ``--window-ps`` (default 1000 ps, rounded to whole bins), centred on the delay:
  it holds > 99.9 % of a Gaussian peak of up to 150 ps rms (350 ps FWHM, typical InGaAs SPAD
  jitter) while keeping the accidentals small.
* accidentals: ``offpeak`` (:func:`dsp.coincidence.accidentals_offpeak`: mean of same-width
  windows tiled across the histogram outside a guard band of 2 windows around the peak; for a
  T3 file, whose source is pulsed at the sync rate, the windows at the side peaks
  ``delay + k x sync period`` instead, if any fits in the range) and ``singles``
  (:func:`dsp.coincidence.accidentals_singles`: N_a N_b / T^2 x window x T). The singles
  estimate assumes uncorrelated CW light; for a pulsed source it is too low (by about the
  pulse period over the pulse width), use the off-peak one. CAR = C / A for both.

Values that cannot be computed (no photons, no coincidences, no off-peak window in range,
zero accidentals) are null in JSON and "n/a" in text, with a ``note``.

Left out
--------
Franson visibility, QBER and key rate (:mod:`dsp.entanglement`) need the interferometer phase
settings of each measurement; a PTU file does not carry them (markers could, but with no
standard meaning), so they are not reported.

Errors: a missing/unreadable file, a file that is not PTU, a truncated file (strict: fewer
records than ``TTResult_NumberOfRecords`` declares) or an invalid record is one line on stderr
(the :class:`labctl.ptu.PtuFormatError` message names the file and byte offset), exit code 1.
Bad option values exit with code 2, like the ``calc`` commands.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from dsp.coincidence import (
    AccidentalsEstimate,
    CoincidenceConfig,
    CoincidenceCounts,
    CoincidenceState,
    accidentals_offpeak,
    accidentals_singles,
    coincidence_process,
    peak_delay,
    window_counts,
)
from labctl.ptu import PtuFormatError, PtuHeader, iter_ptu, read_header

_PROG = "labctl replay"
DEFAULT_RANGE_PS = 20_000
DEFAULT_WINDOW_PS = 1_000
DEFAULT_BATCH_RECORDS = 1 << 20
MIN_DEFAULT_BIN_PS = 10
PEAK_SIGNIFICANCE_MIN = 5.0
SMOOTH_PS = 200.0
NOT_REPORTED = (
    "visibility, QBER and key rate need the interferometer phase settings, which a PTU file "
    "does not carry"
)


class _UsageError(Exception):
    """Invalid option value; the message is one line naming the option."""


class _FileError(Exception):
    """The file cannot be read (missing, not PTU, truncated, invalid record)."""


def _pair(text: str) -> tuple[int, int]:
    parts = text.replace(":", ",").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two channels A,B, got {text!r}") from None
    if not (0 <= a <= 255 and 0 <= b <= 255) or a == b:
        raise argparse.ArgumentTypeError(f"channels must be two different inputs 0..255: {text!r}")
    return a, b


def add_arguments(parser: Any) -> None:
    """The PTU options, on a parser or argument group (``labctl replay`` adds them: see
    :mod:`labctl.replay_cli`, which sets ``args.file``)."""
    parser.add_argument(
        "--pair",
        type=_pair,
        action="append",
        default=None,
        metavar="A,B",
        help="histogram t_B - t_A of this channel pair (repeatable; default: every pair of "
        "channels with photons, A < B)",
    )
    parser.add_argument(
        "--range-ps",
        type=int,
        default=DEFAULT_RANGE_PS,
        metavar="R",
        help=f"histogram covers delays [-R, +R) ps (default {DEFAULT_RANGE_PS})",
    )
    parser.add_argument(
        "--bin-ps",
        type=int,
        default=None,
        metavar="W",
        help="histogram bin width [ps] (default: smallest multiple of the file's time "
        f"resolution >= {MIN_DEFAULT_BIN_PS} ps)",
    )
    parser.add_argument(
        "--window-ps",
        type=int,
        default=DEFAULT_WINDOW_PS,
        metavar="W",
        help=f"coincidence window around the peak [ps], rounded to whole bins "
        f"(default {DEFAULT_WINDOW_PS})",
    )
    parser.add_argument(
        "--batch-records",
        type=int,
        default=DEFAULT_BATCH_RECORDS,
        metavar="N",
        help=f"records decoded and processed per batch (default {DEFAULT_BATCH_RECORDS})",
    )


# ---------------------------------------------------------------------------------------------
# Streaming


def _resolution_ps(header: PtuHeader) -> float:
    """Time quantum of the photon timestamps (ps)."""
    res_s = header.resolution_s if header.is_t3 else header.global_resolution_s
    return res_s * 1e12


def default_bin_ps(header: PtuHeader) -> int:
    """Smallest multiple of the time resolution that is >= 10 ps (whole ps)."""
    res = _resolution_ps(header)
    if res <= 0 or not math.isfinite(res) or abs(res - round(res)) > 1e-6:
        return MIN_DEFAULT_BIN_PS  # non-integer ps resolution: delays are rounded anyway
    q = max(1, round(res))
    return q * max(1, -(-MIN_DEFAULT_BIN_PS // q))


def _sorted_batches(path: str, batch_records: int) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """(block, t, ch) per block, t sorted within and across blocks (T3 reordering)."""
    pend_t = np.zeros(0, np.int64)
    pend_c = np.zeros(0, np.uint8)
    for block in iter_ptu(path, block_records=batch_records, strict=True):
        t = np.concatenate([pend_t, block.timestamp_ps])
        c = np.concatenate([pend_c, block.channel])
        if t.size > 1 and bool(np.any(t[1:] < t[:-1])):
            order = np.argsort(t, kind="stable")
            t, c = t[order], c[order]
        # photons before the horizon are final; the rest may precede the next block's
        cut = t.size if block.is_last else int(np.searchsorted(t, block.horizon_ps))
        pend_t, pend_c = t[cut:], c[cut:]
        yield block, t[:cut], c[:cut]


def _census(path: str, batch_records: int) -> dict[str, Any]:
    singles = np.zeros(256, np.int64)
    first: int | None = None
    last: int | None = None
    n_records = n_markers = n_overflows = n_out_of_order = 0
    for block, t, ch in _sorted_batches(path, batch_records):
        n_records += block.n_records
        n_markers += int(block.marker_bits.size)
        n_overflows += block.n_overflows
        n_out_of_order += block.n_out_of_order
        if t.size:
            singles += np.bincount(ch, minlength=256)[:256]
            first = int(t[0]) if first is None else first
            last = int(t[-1])
    return {
        "singles": singles,
        "first": first,
        "last": last,
        "n_records": n_records,
        "n_markers": n_markers,
        "n_overflows": n_overflows,
        "n_out_of_order": n_out_of_order,
    }


def _coincidences(path: str, batch_records: int, config: CoincidenceConfig) -> CoincidenceCounts:
    state = CoincidenceState.initial(config)
    counts = state.counts
    for _block, t, ch in _sorted_batches(path, batch_records):
        if t.size:
            counts, state = coincidence_process(t, ch, state, config)
    return counts


# ---------------------------------------------------------------------------------------------
# Analysis


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _sidepeak_accidentals(
    counts: CoincidenceCounts, pair: tuple[int, int], center: float, width: float, period: float
) -> AccidentalsEstimate | None:
    """Mean of the windows at ``center + k period`` (k != 0) lying wholly in the histogram."""
    cfg = counts.config
    p = cfg.pair_index(*pair)
    lo, hi = cfg.lo_ps[p], cfg.lo_ps[p] + cfg.n_bins * cfg.bin_ps
    sums = []
    k_max = int((hi - lo) // period) + 1
    for k in range(-k_max, k_max + 1):
        c = center + k * period
        if k == 0 or c - width / 2 < lo or c + width / 2 > hi:
            continue
        sums.append(window_counts(counts, pair, c, width).counts)
    if not sums:
        return None
    total = float(sum(sums))
    n = len(sums)
    return AccidentalsEstimate(total / n, math.sqrt(max(total, 1.0)) / n, "sidepeaks", n)


def _car(c: int, acc: AccidentalsEstimate | None) -> tuple[float | None, float | None]:
    if acc is None or not acc.value > 0:
        return None, None
    ratio = c / acc.value
    err = ratio * math.sqrt((1.0 / c if c > 0 else 0.0) + (acc.err / acc.value) ** 2)
    return ratio, err


def _analyse_pair(
    counts: CoincidenceCounts | None,
    pair: tuple[int, int],
    singles: np.ndarray,
    window_ps: int,
    sync_period_ps: float | None,
) -> dict[str, Any]:
    a, b = pair
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "delay_ps": None,
        "peak_significance": None,
        "peak_found": False,
        "window_lo_ps": None,
        "window_hi_ps": None,
        "coincidences": None,
        "histogram_total": None,
        "accidentals_offpeak": None,
        "accidentals_offpeak_err": None,
        "offpeak_method": None,
        "offpeak_windows": None,
        "accidentals_singles": None,
        "accidentals_singles_err": None,
        "car": None,
        "car_err": None,
        "car_singles": None,
        "car_singles_err": None,
        "note": None,
    }
    empty = [c for c in pair if singles[c] == 0]
    if empty or counts is None:
        out["note"] = f"no photons on channel {empty[0]}" if empty else "no photons"
        return out
    hist = counts.histogram(a, b)
    total = int(hist.sum())
    out["histogram_total"] = total
    if total == 0:
        out["note"] = "no coincidences in the histogram range"
        return out
    est = peak_delay(counts, pair, smooth_ps=SMOOTH_PS)
    cfg = counts.config
    width = float(max(1, round(window_ps / cfg.bin_ps)) * cfg.bin_ps)
    out["delay_ps"] = est.delay_ps
    out["peak_significance"] = est.significance
    out["peak_found"] = est.significance >= PEAK_SIGNIFICANCE_MIN
    notes = []
    if not out["peak_found"]:
        notes.append(
            f"no significant coincidence peak (significance {est.significance:.3g} < "
            f"{PEAK_SIGNIFICANCE_MIN:g}): delay and window describe the largest noise bump"
        )
    p = cfg.pair_index(a, b)
    lo, hi = cfg.lo_ps[p], cfg.lo_ps[p] + cfg.n_bins * cfg.bin_ps
    if est.delay_ps - width / 2 < lo or est.delay_ps + width / 2 > hi:
        notes.append("the window around the peak does not fit in the histogram range")
        out["note"] = "; ".join(notes)
        return out
    win = window_counts(counts, pair, est.delay_ps, width)
    out["window_lo_ps"], out["window_hi_ps"] = win.lo_ps, win.hi_ps
    out["coincidences"] = win.counts
    off: AccidentalsEstimate | None = None
    if sync_period_ps:
        off = _sidepeak_accidentals(counts, pair, est.delay_ps, width, sync_period_ps)
    if off is None:
        try:
            off = accidentals_offpeak(counts, pair, est.delay_ps, width)
        except ValueError:
            notes.append("no off-peak window fits in the histogram range")
    if off is not None:
        out["accidentals_offpeak"] = off.value
        out["accidentals_offpeak_err"] = off.err
        out["offpeak_method"] = "tiled" if off.method == "offpeak" else off.method
        out["offpeak_windows"] = off.n_windows
        out["car"], out["car_err"] = _car(win.counts, off)
    sing = accidentals_singles(counts, pair, est.delay_ps, width)
    out["accidentals_singles"] = sing.value
    out["accidentals_singles_err"] = _finite(sing.err)
    out["car_singles"], out["car_singles_err"] = _car(win.counts, sing)
    if out["car"] is None and out["car_singles"] is None:
        notes.append("CAR not computable: no accidentals")
    out["note"] = "; ".join(notes) or None
    return out


def _header_acquisition_s(header: PtuHeader) -> float | None:
    value = header.tags.get("MeasDesc_AcquisitionTime")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value) * 1e-3  # PicoQuant stores it in ms
    return None


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    path = os.fspath(args.file)
    caught: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as wlist:
            warnings.simplefilter("always")
            header = read_header(path)
            census = _census(path, args.batch_records)
            bin_ps = args.bin_ps if args.bin_ps is not None else default_bin_ps(header)
            if 2 * args.window_ps >= args.range_ps:
                raise _UsageError(
                    f"--window-ps {args.window_ps} must be less than half of --range-ps "
                    f"{args.range_ps} (the off-peak windows need room)"
                )
            if -(-2 * args.range_ps // bin_ps) > 10_000_000:
                raise _UsageError("--range-ps / --bin-ps: more than 10 000 000 bins")
            singles = census["singles"]
            channels = [int(c) for c in np.nonzero(singles)[0]]
            if args.pair:
                pairs = list(dict.fromkeys(args.pair))
            else:
                pairs = [(a, b) for i, a in enumerate(channels) for b in channels[i + 1 :]]
            live_pairs = [p for p in pairs if singles[p[0]] and singles[p[1]]]
            counts = None
            if live_pairs:
                config = CoincidenceConfig.create(
                    live_pairs, bin_ps=bin_ps, half_range_ps=args.range_ps
                )
                counts = _coincidences(path, args.batch_records, config)
        caught = [str(w.message) for w in wlist]
    except PtuFormatError as exc:
        raise _FileError(str(exc)) from None
    except OSError as exc:
        raise _FileError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a T2 file not in time order
        raise _FileError(f"{path}: {exc}") from None

    first, last = census["first"], census["last"]
    duration_s = (last - first) * 1e-12 if first is not None and last != first else None
    sync_ps = header.sync_period_s * 1e12 if header.sync_period_s else None
    n_tags = int(singles.sum())
    out: dict[str, Any] = {
        "file": path,
        "record_type": header.record_type.name,
        "mode": header.mode,
        "measurement_mode": header.tags.get("Measurement_Mode"),
        "global_resolution_ps": header.global_resolution_s * 1e12,
        "resolution_ps": _resolution_ps(header),
        "sync_period_ps": sync_ps,
        "n_records": census["n_records"],
        "n_tags": n_tags,
        "n_markers": census["n_markers"],
        "n_overflows": census["n_overflows"],
        "first_tag_ps": first,
        "last_tag_ps": last,
        "duration_s": duration_s,
        "header_acquisition_s": _header_acquisition_s(header),
        "singles": [
            {
                "channel": c,
                "counts": int(singles[c]),
                "rate_hz": int(singles[c]) / duration_s if duration_s else None,
            }
            for c in channels
        ],
        "histogram": {
            "bin_ps": bin_ps,
            "range_ps": args.range_ps,
            "n_bins": -(-2 * args.range_ps // bin_ps),
            "window_ps": max(1, round(args.window_ps / bin_ps)) * bin_ps,
        },
        "pairs": [_analyse_pair(counts, p, singles, args.window_ps, sync_ps) for p in pairs],
        "warnings": caught,
        "not_reported": NOT_REPORTED,
    }
    if census["n_out_of_order"]:
        out["warnings"].append(f"{census['n_out_of_order']} photons out of record order")
    return out


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def _summary(out: dict[str, Any]) -> str:
    h = out["histogram"]
    lines = [
        f"{out['file']}: {out['record_type']} ({out['mode']}), {out['n_records']} records, "
        f"{out['n_tags']} photons, {out['n_markers']} markers",
        f"  duration {_fmt(out['duration_s'], '.6g')} s (first to last photon)"
        + (
            f", header acquisition time {out['header_acquisition_s']:.6g} s"
            if out["header_acquisition_s"] is not None
            else ""
        ),
        f"  resolution {out['resolution_ps']:.6g} ps; histogram +-{h['range_ps']} ps in "
        f"{h['bin_ps']} ps bins, window {h['window_ps']} ps",
        "  singles:",
    ]
    if not out["singles"]:
        lines.append("    (no photons)")
    for s in out["singles"]:
        lines.append(
            f"    ch {s['channel']:>3}: {s['counts']:>12} counts  {_fmt(s['rate_hz'], '.6g')} Hz"
        )
    lines.append("  pairs (delay = t_b - t_a):")
    if not out["pairs"]:
        lines.append("    (fewer than two channels with photons)")
    for p in out["pairs"]:
        head = f"    {p['a']}->{p['b']}:"
        if p["delay_ps"] is None:
            lines.append(f"{head} {p['note']}")
            continue
        acc_off = _fmt(p["accidentals_offpeak"])
        if p["offpeak_method"]:
            acc_off += f" ({p['offpeak_method']}, {p['offpeak_windows']} windows)"
        lines += [
            f"{head} delay {p['delay_ps']:.1f} ps (significance {p['peak_significance']:.3g}), "
            f"window [{_fmt(p['window_lo_ps'], 'd')}, {_fmt(p['window_hi_ps'], 'd')}) ps",
            f"      coincidences {_fmt(p['coincidences'], 'd')}, accidentals off-peak "
            f"{acc_off}, singles x singles x window {_fmt(p['accidentals_singles'])}",
            f"      CAR {_fmt(p['car'])} +- {_fmt(p['car_err'], '.2g')} (off-peak), "
            f"{_fmt(p['car_singles'])} +- {_fmt(p['car_singles_err'], '.2g')} (singles)",
        ]
        if p["note"]:
            lines.append(f"      note: {p['note']}")
    for w in out["warnings"]:
        lines.append(f"  warning: {w}")
    lines.append(f"  not reported: {out['not_reported']}")
    return "\n".join(lines)


def _validate(args: argparse.Namespace) -> None:
    if args.range_ps < 1:
        raise _UsageError(f"--range-ps must be >= 1 ps, got {args.range_ps}")
    if args.bin_ps is not None and args.bin_ps < 1:
        raise _UsageError(f"--bin-ps must be >= 1 ps, got {args.bin_ps}")
    if args.window_ps < 1:
        raise _UsageError(f"--window-ps must be >= 1 ps, got {args.window_ps}")
    if args.batch_records < 1:
        raise _UsageError(f"--batch-records must be >= 1, got {args.batch_records}")


def run(args: argparse.Namespace) -> int:
    """Execute ``labctl replay``; returns the exit code (0 ok, 1 file error, 2 usage)."""
    try:
        _validate(args)
        out = _compute(args)
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except _FileError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print(_summary(out))
    return 0
