"""``labctl bench record``: the recording engine against plain h5py writes of the same data.

Registered by the top-level CLI with ``bench_record.add_parser(bench_sub)``; the work is done
by :func:`run_benchmark`, which returns the figures as a dict (the ``--json`` output).

Write benchmark (issue 6: recorder overhead <= 10 %)
----------------------------------------------------
For each bench (ISAQN and entanglement) one block of realistic raw data is generated in
memory first (seeded numpy), then written alternately ``--repeat`` times each (recorder,
plain, recorder, plain, ...), into files in a temporary directory (or ``--dir``) that are
deleted after each run:

* **raw data** -- exactly the bench's raw tables, declared by the bench recorders:
  ISAQN (:func:`labctl.isaqn_record.isaqn_tables`): one ``raw/scope/codes`` int16 row
  ``(2, record_length)`` (0.4 MB for the shipped 100 000-sample records) and one
  ``raw/scope/info`` row per scope record; as the job acquires them, first
  ``calibration_records`` "electronic" records (Gaussian noise, 100 codes rms), as many
  "shot" records (300 codes rms, the level the engine's own compression figures used), then
  "data" records (shot noise plus a continuous 1 kHz tone).
  Entanglement (:func:`labctl.entangle_record.entanglement_tables`): per 50 ms read (the
  job's default tick, :class:`labctl.entangle_job.EntanglementJob`) and per tagger a sorted
  batch of Poisson tags at :data:`TAG_RATE_HZ` (int64 ps timestamps on the tagger's own
  clock, uint8 inputs drawn from the bench file's channels of that tagger), then the read's
  ``raw/reads`` and ``raw/read_times`` rows, as
  :meth:`labctl.entangle_record.EntanglementRecorder.read` appends them (a raw table the
  generators do not know is refused, so the benchmark follows the recorders).
  ``--mb`` sets the payload per case (default 512 MB, ~1300 records / ~950 reads).
* **recorder** -- a :class:`labctl.h5record.Recorder` with exactly those tables (default
  queue bound, ``--flush-interval-s`` commits), one ``append`` per record / per read per
  table in acquisition order, then ``close``. Timed from the first append to ``close``
  returning: everything written, committed and closed (in the page cache, no fsync).
* **plain h5py** -- the same datasets (dtype, chunks, maxshape, compression) created with
  h5py in a file with ``libver=("v110", "v110")``, written synchronously in the same order
  (``resize`` + slice assignment per item), ``File.flush()`` every flush interval, closed.
  Timed from the first write to ``close`` returning. h5py's default chunk cache, no SWMR:
  what a straightforward script would do.

The payload is the same in both cases: the bytes of every item (for text, the UTF-8
length plus the 8-byte reference, as :meth:`Recorder.stats` counts them). Figures: MB/s
(payload / wall seconds, MB = 10**6 bytes) per case, the median of the repeats; the ratio;
the recorder's overhead ``(t_recorder / t_plain - 1) * 100`` % of the medians, against the
target (<= :data:`TARGET_OVERHEAD_PCT` %); the same with process CPU time (both threads of
the recorder). The data are appended as fast as the producer can, far faster than any
bench acquires (~4 MB/s ISAQN, ~11 MB/s entanglement), so the recorder's queue fills: the
producer then waits for room (polling :meth:`Recorder.stats`) rather than have rows refused,
and the number of such waits is reported with the queue's peak (sampled every
:data:`QUEUE_SAMPLE_S`, at every wait and after the last append: a lower bound of the true
peak) and the overruns (0 unless the recorder refused rows). The first repetition's two
files are read back (the recorder's through :func:`labctl.h5read.open_recording`, committed
rows only) and compared with the generated data and with each other (``identical``).

Noise: the two cases of one repetition run back to back, on a shared 2-core machine, so a
neighbour's load hits both alike only on average: the individual times and the load
average are reported, and the CPU-time figures are the cross-check that does not count
time spent descheduled.

Replay benchmark (single process vs a local Dask cluster)
---------------------------------------------------------
``--recordings`` (default 4) recordings of the simulated ``--replay-bench`` (default
entanglement: ``labctl run configs/entanglement_sim.toml --duration 8 --no-loops``; ISAQN:
``--duration 3``) are made by ``labctl run`` in subprocesses (~18 s each, mostly the
bench's start-up) and deleted afterwards; ``--replay-files`` replays existing ones instead.
A run that fails, or does not end within :func:`record_timeout_s` (seen: the entanglement
job sometimes never finds the second tagger's clock, so its data time never reaches
``--duration``), is tried again once and reported (``recording_failures``). They are made
before the write benchmark (3 of 3 full runs made that way had the last recording hang; 0
of 11 recordings made before it, or alone, did).
Each process first replays the first file once, untimed (imports, Numba kernels loaded
from their cache). Then, timed:

* *1 process (replay_chunk)*: every file after the other,
  :func:`labctl.replay_h5.replay_chunk` over the whole file: exactly the work the Dask
  tasks do, so the reference of the ratio;
* *1 process (replay_file)*: :func:`labctl.replay_h5.replay_file` (``labctl replay``),
  which also compares every update with the recorded one;
* *Dask*: :func:`labctl.replay_dask.replay_many` on a :class:`distributed.LocalCluster` of
  ``--workers`` single-threaded worker processes, created as ``replay_many`` creates its
  own (:func:`labctl.replay_dask.local_cluster`, the one ``replay_many`` starts); the
  cluster's start-up and the workers' warm-up are timed and reported apart.

Figures: MB/s of raw data replayed (the committed rows of the files' ``raw/`` tables),
records or reads per second, the ratio Dask / single process, CPU seconds (this process;
for Dask the workers' process time), and whether the Dask updates equal the single-process
ones exactly (``agree``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table as RichTable

from labctl.config import BenchConfig, load_bench
from labctl.entangle_record import FORMAT as ENTANGLEMENT_FORMAT
from labctl.entangle_record import READ_DTYPE, TAG_DTYPE, entanglement_tables
from labctl.h5read import open_recording
from labctl.h5record import (
    DEFAULT_QUEUE_MAX_BYTES,
    FormatId,
    Recorder,
    Schema,
    Table,
    has_strings,
)
from labctl.isaqn_record import FORMAT as ISAQN_FORMAT
from labctl.isaqn_record import INFO_DTYPE, isaqn_tables

_PROG = "labctl bench record"
#: Issue 6: the recorder may cost at most 10 % more wall time than plain h5py writes.
TARGET_OVERHEAD_PCT = 10.0
#: Tags per second per tagger (issue 6's figure: a busy entanglement link's detectors).
TAG_RATE_HZ = 600e3
#: One read of the entanglement job: its default tick (``EntanglementJob(tick_s=0.05)``).
READ_S = 0.05
#: ADC noise of the generated scope records, codes rms (the level of the noisy int16 codes
#: the engine's compression figures were measured on, ``labctl.h5record.Table``).
NOISE_CODES_RMS = 300.0
#: Electronic noise (LO off) of the calibration records, codes rms: 9.5 dB below the shot
#: noise, a typical shot-noise clearance of a balanced homodyne detector.
ELECTRONIC_CODES_RMS = 100.0
#: Amplitude (codes) and frequency (Hz) of the tone in the generated data records.
TONE_CODES, TONE_HZ = 2000.0, 1.0e3
#: Wall time of the generated data's first record / read (ns since 1970, UTC: 2026-01-01),
#: for the tables that log when a row was recorded; fixed so a seed gives the same bytes.
T0_UNIX_NS = 1_767_225_600_000_000_000
#: How often a sampler thread reads the recorder's queue fill (s).
QUEUE_SAMPLE_S = 0.005
#: While the queue is full the producer re-checks it this often (s).
PRODUCER_POLL_S = 0.001
#: Rows compared per read-back step (bytes): bounded memory, reused pages.
COMPARE_BLOCK_BYTES = 16 * 2**20
DEFAULT_MB = 512.0
DEFAULT_ISAQN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "isaqn_sim.toml"
DEFAULT_ENTANGLEMENT_CONFIG = (
    Path(__file__).resolve().parent.parent / "configs" / "entanglement_sim.toml"
)
BENCHES = ("isaqn", "entanglement")
#: Data seconds per recording made for the replay figures (the brief's short runs).
RECORD_DURATION_S = {"isaqn": 3.0, "entanglement": 8.0}

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Raw data


@dataclass(frozen=True)
class RawData:
    """One bench's raw data, ready to write: ``items`` are (table index, rows) in acquisition
    order, each ``rows`` of shape ``(n, *row_shape)`` and the table's dtype."""

    bench: str
    format: FormatId
    tables: tuple[Table, ...]
    items: tuple[tuple[int, np.ndarray], ...]
    units: int  # scope records or tagger reads
    unit_name: str
    description: str

    @property
    def payload_bytes(self) -> int:
        """Bytes of every item (text: UTF-8 length + its 8-byte reference)."""
        return sum(payload_bytes(rows) for _, rows in self.items)

    def table_bytes(self) -> dict[str, int]:
        """Payload bytes per table."""
        out = dict.fromkeys((t.path for t in self.tables), 0)
        for k, rows in self.items:
            out[self.tables[k].path] += payload_bytes(rows)
        return out


def payload_bytes(rows: np.ndarray) -> int:
    """Bytes of ``rows`` as the recorder counts them: the buffer, plus the UTF-8 length of
    every Python string in an object field (variable-length text)."""
    n = int(rows.nbytes)
    names = rows.dtype.names
    columns = [rows] if names is None else [rows[name] for name in names]
    for col in columns:
        if col.dtype.kind == "O":
            n += sum(len(str(s).encode("utf-8")) for s in col.flat)
    return n


def raw_tables(tables: Sequence[Table]) -> tuple[Table, ...]:
    """The tables under ``raw/`` (the bench's raw data, as acquired)."""
    return tuple(t for t in tables if t.path.startswith("raw/"))


def isaqn_data(config: BenchConfig, n_records: int, *, seed: int = 1) -> RawData:
    """``n_records`` scope records of the ISAQN bench ``config`` (see the module doc)."""
    iq = config.isaqn
    if iq is None:
        raise ValueError(f"{config.path}: no [isaqn] section")
    if n_records < 1:
        raise ValueError(f"n_records: got {n_records}, expected >= 1")
    tables = raw_tables(isaqn_tables(config))
    _known(tables, {"raw/scope/codes", "raw/scope/info"}, "isaqn_data")
    k_codes = _index(tables, "raw/scope/codes")
    k_info = _index(tables, "raw/scope/info")
    rng = np.random.default_rng(seed)
    n = int(iq.record_length)
    # a continuous tone (I = cos, Q = sin): each record starts where the last one ended
    record_s = n / float(iq.sample_rate_hz)
    base = np.exp(2j * np.pi * TONE_HZ * np.arange(n) / float(iq.sample_rate_hz))
    base = (TONE_CODES * base).astype(np.complex64)
    # the scope's int16 code over its 8 vertical divisions (+-4 div full scale)
    volts_per_code = 8.0 * float(iq.scope_scale_v_per_div) / 65536.0
    cal = int(iq.calibration_records)
    noisy = np.empty((2, n), np.float32)
    items: list[tuple[int, np.ndarray]] = []
    for r in range(n_records):
        kind = "electronic" if r < cal else "shot" if r < 2 * cal else "data"
        rng.standard_normal((2, n), dtype=np.float32, out=noisy)
        noisy *= np.float32(ELECTRONIC_CODES_RMS if kind == "electronic" else NOISE_CODES_RMS)
        if kind == "data":
            tone = base * np.complex64(np.exp(2j * np.pi * TONE_HZ * r * record_s))
            noisy[0] += tone.real
            noisy[1] += tone.imag
        # the tone (2000) plus 100 sigma of noise would be needed to leave int16: no clipping
        codes = np.rint(noisy).astype(np.int16)[np.newaxis]
        info = np.zeros(1, INFO_DTYPE)
        for name, value in {
            "t_unix_ns": T0_UNIX_NS + round(r * record_s * 1e9),
            "index": r,
            "kind": kind,
            "volts_per_code": (volts_per_code, volts_per_code),
            "offset_v": (0.0, 0.0),
            "overloads": 0,
        }.items():
            if name in INFO_DTYPE.names:
                info[name] = value
        items += [(k_codes, codes), (k_info, info)]
    return RawData(
        "isaqn",
        ISAQN_FORMAT,
        tables,
        tuple(items),
        n_records,
        "record",
        f"{n_records} scope records of 2 x {n} int16 codes ({config.path.name})",
    )


def entanglement_data(
    config: BenchConfig,
    n_reads: int,
    *,
    rate_hz: float = TAG_RATE_HZ,
    read_s: float = READ_S,
    seed: int = 1,
) -> RawData:
    """``n_reads`` reads of every tagger of the entanglement bench ``config`` (Poisson tags at
    ``rate_hz`` per tagger, ``read_s`` per read; see the module doc)."""
    ent = config.entanglement
    if ent is None:
        raise ValueError(f"{config.path}: no [entanglement] section")
    if n_reads < 1:
        raise ValueError(f"n_reads: got {n_reads}, expected >= 1")
    if not rate_hz >= 0.0 or not read_s > 0.0:
        raise ValueError(f"rate_hz {rate_hz!r} must be >= 0 and read_s {read_s!r} > 0")
    n_bins = 2 * int(ent.max_delay_ps) // int(ent.bin_ps)  # only derived/histograms uses it
    tables = raw_tables(entanglement_tables(config, [], n_bins))
    taggers = tuple(ent.taggers)
    times = "raw/read_times"
    known = {f"raw/tags/{name}" for name in taggers} | {"raw/reads", times}
    _known(tables, known, "entanglement_data")
    k_tags = [_index(tables, f"raw/tags/{name}") for name in taggers]
    k_reads = _index(tables, "raw/reads")
    k_times = _index(tables, times) if any(t.path == times for t in tables) else None
    inputs = {
        name: np.array(sorted({c.input for c in ent.channels if c.tagger == name}), np.uint8)
        for name in taggers
    }
    rng = np.random.default_rng(seed)
    read_ps = round(read_s * 1e12)
    first = dict.fromkeys(taggers, 0)
    items: list[tuple[int, np.ndarray]] = []
    for r in range(n_reads):
        start_ps = r * read_ps
        rows = np.zeros((1, len(taggers)), READ_DTYPE)
        for j, name in enumerate(taggers):
            n = int(rng.poisson(rate_hz * read_s))
            if n:  # EntanglementRecorder.read appends no empty batch
                tags = np.empty(n, TAG_DTYPE)
                # a Poisson process over the read: uniform times, sorted
                tags["timestamp_ps"] = np.sort(rng.integers(start_ps, start_ps + read_ps, n))
                tags["channel"] = rng.choice(inputs[name], n)
                items.append((k_tags[j], tags))
            rows[0, j] = (first[name], n, start_ps + read_ps, 0, False)
            first[name] += n
        items.append((k_reads, rows))
        if k_times is not None:  # when the read was recorded
            t_ns = T0_UNIX_NS + round((r + 1) * read_s * 1e9)
            items.append((k_times, np.array([t_ns], np.int64)))
    return RawData(
        "entanglement",
        ENTANGLEMENT_FORMAT,
        tables,
        tuple(items),
        n_reads,
        "read",
        f"{n_reads} reads of {read_s * 1e3:g} ms x {len(taggers)} taggers at "
        f"{rate_hz / 1e3:g} k tags/s each ({config.path.name})",
    )


def isaqn_records_for(config: BenchConfig, payload_bytes: float) -> int:
    """How many scope records make about ``payload_bytes``."""
    assert config.isaqn is not None
    per = 2 * 2 * int(config.isaqn.record_length) + INFO_DTYPE.itemsize + 8
    return max(1, round(payload_bytes / per))


def entanglement_reads_for(
    config: BenchConfig, payload_bytes: float, *, rate_hz: float = TAG_RATE_HZ
) -> int:
    """How many reads make about ``payload_bytes``."""
    assert config.entanglement is not None
    n = len(config.entanglement.taggers)
    per = n * (rate_hz * READ_S * TAG_DTYPE.itemsize + READ_DTYPE.itemsize) + 8  # + read time
    return max(1, round(payload_bytes / per))


def _known(tables: Sequence[Table], known: set[str], who: str) -> None:
    """Refuse a raw table the generator does not fill (the bench recorder grew one)."""
    unknown = sorted(t.path for t in tables if t.path not in known)
    if unknown:
        raise ValueError(
            f"{who}: the bench's raw tables include {unknown}, which this benchmark does not "
            "generate: add them to labctl/bench_record.py as the bench recorder appends them"
        )


def _index(tables: Sequence[Table], path: str) -> int:
    for k, t in enumerate(tables):
        if t.path == path:
            return k
    raise ValueError(f"no table {path!r} among {[t.path for t in tables]}")


# ---------------------------------------------------------------------------------------------
# The two writers


@dataclass
class WriteRun:
    """One timed write of a :class:`RawData`."""

    case: str  # "recorder" or "plain"
    wall_s: float
    cpu_s: float  # process CPU time (every thread)
    payload_bytes: int
    file_bytes: int
    flushes: int  # recorder: commits; plain: File.flush() calls
    extra: dict[str, Any] = field(default_factory=dict)


class _QueueSampler:
    """Reads a recorder's queue fill every ``period_s`` in a thread; ``peak`` is the largest."""

    def __init__(self, rec: Recorder, period_s: float = QUEUE_SAMPLE_S) -> None:
        self.rec = rec
        self.period_s = period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue sampler", daemon=True)

    def see(self, queue_bytes: int) -> None:
        self.peak = max(self.peak, queue_bytes)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.see(self.rec.stats().queue_bytes)

    def __enter__(self) -> _QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_with_recorder(
    data: RawData,
    path: Path,
    *,
    flush_interval_s: float = 1.0,
    queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
) -> WriteRun:
    """Write ``data`` with a :class:`Recorder` (see the module doc); the file stays."""
    names = [t.path for t in data.tables]
    sizes = [payload_bytes(rows) for _, rows in data.items]
    rec = Recorder(
        path,
        Schema(data.format, data.tables),
        flush_interval_s=flush_interval_s,
        queue_max_bytes=queue_max_bytes,
    )
    waits, wait_s = 0, 0.0
    try:
        with _QueueSampler(rec) as sampler:
            appended = 0  # payload bytes appended
            drained = 0  # of which the writer had taken at the last look
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for (k, rows), nbytes in zip(data.items, sizes, strict=True):
                if appended - drained + nbytes > queue_max_bytes:
                    # maybe full: wait for room rather than have the rows refused
                    w0 = time.perf_counter()
                    while True:
                        queued = rec.stats().queue_bytes
                        sampler.see(queued)
                        drained = appended - queued
                        if queued + nbytes <= queue_max_bytes:
                            break
                        waits += 1
                        time.sleep(PRODUCER_POLL_S)
                    wait_s += time.perf_counter() - w0
                rec.append(names[k], rows)
                appended += nbytes
            sampler.see(rec.stats().queue_bytes)  # the queue as the last append left it
            rec.close()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        rec.close()
    st = rec.stats()
    bytes_appended = sum(st.tables[n].bytes_appended for n in names)
    return WriteRun(
        "recorder",
        wall,
        cpu,
        data.payload_bytes,
        path.stat().st_size,
        st.commits,
        {
            "bytes_appended": bytes_appended,
            "queue_peak_bytes": sampler.peak,
            "queue_max_bytes": queue_max_bytes,
            "overruns": st.overruns,
            "rows_lost": st.rows_lost,
            "producer_waits": waits,
            "producer_wait_s": wait_s,
        },
    )


def create_plain_datasets(f: h5py.File, tables: Sequence[Table]) -> list[h5py.Dataset]:
    """``tables`` as h5py datasets with the recorder's dtype, chunks, maxshape, compression."""
    out = []
    for t in tables:
        kwargs: dict[str, Any] = {}
        if t.compression == "gzip":
            kwargs = {"compression": "gzip", "compression_opts": t.gzip_level, "shuffle": True}
        elif t.compression == "lzf":
            kwargs = {"compression": "lzf"}
        out.append(
            f.create_dataset(
                t.path,
                shape=(0, *t.row_shape),
                maxshape=(None, *t.row_shape),
                chunks=(t.chunk_rows, *t.row_shape),
                dtype=t.dtype,
                **kwargs,
            )
        )
    return out


def write_with_h5py(data: RawData, path: Path, *, flush_interval_s: float = 1.0) -> WriteRun:
    """Write ``data`` with plain h5py calls (see the module doc); the file stays."""
    f = h5py.File(path, "x", libver=("v110", "v110"))
    try:
        datasets = create_plain_datasets(f, data.tables)
        rows_in = [0] * len(datasets)
        flushes = 0
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        next_flush = time.monotonic() + flush_interval_s
        for k, rows in data.items:
            ds, n0 = datasets[k], rows_in[k]
            ds.resize(n0 + rows.shape[0], axis=0)
            ds[n0 : n0 + rows.shape[0]] = rows
            rows_in[k] = n0 + rows.shape[0]
            now = time.monotonic()
            if now >= next_flush:
                f.flush()
                flushes += 1
                next_flush = now + flush_interval_s
        f.close()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        f.close()
    return WriteRun("plain", wall, cpu, data.payload_bytes, path.stat().st_size, flushes)


def compare_files(data: RawData, recorder_path: Path, plain_path: Path) -> list[str]:
    """Differences between the generated data, the recorder's file (committed rows, read
    with :func:`open_recording`) and the plain file; empty if all three agree. Read in
    blocks of about :data:`COMPARE_BLOCK_BYTES`."""
    problems: list[str] = []
    with open_recording(recorder_path, expected_format=data.format) as rec:
        if not rec.complete:
            problems.append(f"{recorder_path}: not marked complete")
        with h5py.File(plain_path, "r") as plain:
            for k, t in enumerate(data.tables):
                items = [rows for j, rows in data.items if j == k]
                total = sum(rows.shape[0] for rows in items)
                files = {"recorder": rec.rows(t.path), "plain": plain[t.path].shape[0]}
                for case, n in files.items():
                    if n != total:
                        problems.append(
                            f"{case} file, table {t.path!r}: {n} rows, {total} generated"
                        )
                if any(n != total for n in files.values()):
                    continue
                start, bad = 0, set()
                for block in _blocks(items, COMPARE_BLOCK_BYTES):
                    want = block[0] if len(block) == 1 else np.concatenate(block)
                    stop = start + want.shape[0]
                    got = {
                        "recorder": rec.table(t.path, start, stop),
                        "plain": plain[t.path][start:stop],
                    }
                    bad |= {case for case, arr in got.items() if not _same(arr, want)}
                    start = stop
                problems += [
                    f"{case} file, table {t.path!r}: rows differ from the generated ones"
                    for case in sorted(bad)
                ]
    return problems


def _blocks(items: list[np.ndarray], nbytes: int) -> Iterator[list[np.ndarray]]:
    """``items`` in consecutive groups of about ``nbytes``."""
    block: list[np.ndarray] = []
    size = 0
    for rows in items:
        block.append(rows)
        size += rows.nbytes
        if size >= nbytes:
            yield block
            block, size = [], 0
    if block:
        yield block


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and values; text compared as str whatever h5py returned (bytes/str)."""
    if a.shape != b.shape:
        return False
    if b.dtype.names is None:
        if has_strings(b.dtype):
            return [_text(x) for x in a.flat] == [_text(x) for x in b.flat]
        return bool(np.array_equal(a, b))
    if a.dtype.names != b.dtype.names:
        return False
    return all(_same(a[name], b[name]) for name in b.dtype.names)


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# ---------------------------------------------------------------------------------------------
# The benchmark


def measure_write(
    data: RawData,
    directory: Path,
    *,
    repeat: int = 3,
    flush_interval_s: float = 1.0,
    verify: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Time ``data`` written ``repeat`` times by each writer, alternating; the figures."""
    say = progress or (lambda _msg: None)
    runs: dict[str, list[WriteRun]] = {"recorder": [], "plain": []}
    problems: list[str] | None = None
    # warm-up, untimed: imports, HDF5's first file, the allocator's first large buffers
    warm = RawData(
        data.bench,
        data.format,
        data.tables,
        data.items[: min(len(data.items), 16)],
        0,
        data.unit_name,
        "warm-up",
    )
    for i in range(repeat + 1):
        rec_path = directory / f"{data.bench}-recorder-{i}.h5"
        plain_path = directory / f"{data.bench}-plain-{i}.h5"
        src = warm if i == 0 else data
        try:
            if i:
                say(f"{data.bench}: repetition {i}/{repeat}: recorder")
            r = write_with_recorder(src, rec_path, flush_interval_s=flush_interval_s)
            if i:
                say(f"{data.bench}: repetition {i}/{repeat}: plain h5py")
            p = write_with_h5py(src, plain_path, flush_interval_s=flush_interval_s)
            if i:
                runs["recorder"].append(r)
                runs["plain"].append(p)
            if i == 1 and verify:
                say(f"{data.bench}: reading both files back")
                problems = compare_files(data, rec_path, plain_path)
        finally:
            for p_ in (rec_path, plain_path):
                with contextlib.suppress(FileNotFoundError):
                    p_.unlink()
    return _write_figures(data, runs, problems, flush_interval_s)


def _write_figures(
    data: RawData,
    runs: dict[str, list[WriteRun]],
    problems: list[str] | None,
    flush_interval_s: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": data.description,
        "tables": [
            {
                "path": t.path,
                "dtype": str(t.dtype),
                "row_shape": list(t.row_shape),
                "chunk_rows": t.chunk_rows,
                "compression": t.compression,
                "payload_bytes": data.table_bytes()[t.path],
            }
            for t in data.tables
        ],
        "units": data.units,
        "unit": data.unit_name,
        "items": len(data.items),
        "payload_bytes": data.payload_bytes,
        "flush_interval_s": flush_interval_s,
    }
    for case, rs in runs.items():
        wall = statistics.median(r.wall_s for r in rs)
        cpu = statistics.median(r.cpu_s for r in rs)
        fig: dict[str, Any] = {
            "wall_s": [r.wall_s for r in rs],
            "cpu_s": [r.cpu_s for r in rs],
            "median_wall_s": wall,
            "median_cpu_s": cpu,
            "mb_per_s": data.payload_bytes / wall / 1e6,
            "mb_per_cpu_s": data.payload_bytes / cpu / 1e6,
            "units_per_s": data.units / wall,
            "file_bytes": rs[0].file_bytes,
            ("commits" if case == "recorder" else "flushes"): [r.flushes for r in rs],
        }
        if case == "recorder":
            fig["bytes_appended"] = [r.extra["bytes_appended"] for r in rs]
            fig["queue_peak_bytes"] = max(r.extra["queue_peak_bytes"] for r in rs)
            fig["queue_max_bytes"] = rs[0].extra["queue_max_bytes"]
            for key in ("overruns", "rows_lost", "producer_waits"):
                fig[key] = sum(r.extra[key] for r in rs)
            fig["producer_wait_s"] = [r.extra["producer_wait_s"] for r in rs]
        out[case] = fig
    rec, plain = out["recorder"], out["plain"]
    out["ratio"] = rec["mb_per_s"] / plain["mb_per_s"]
    out["overhead_pct"] = (rec["median_wall_s"] / plain["median_wall_s"] - 1.0) * 100.0
    out["overhead_cpu_pct"] = (rec["median_cpu_s"] / plain["median_cpu_s"] - 1.0) * 100.0
    out["target_overhead_pct"] = TARGET_OVERHEAD_PCT
    out["target_met"] = out["overhead_pct"] <= TARGET_OVERHEAD_PCT
    out["same_payload"] = all(b == data.payload_bytes for b in rec["bytes_appended"])
    out["identical"] = None if problems is None else not problems
    out["problems"] = problems or []
    return out


# ---------------------------------------------------------------------------------------------
# Replay: single process vs a local Dask cluster


def make_recordings(
    bench: str,
    n: int,
    directory: Path,
    *,
    duration_s: float | None = None,
    config: Path | None = None,
    retries: int = 1,
    progress: Progress | None = None,
) -> tuple[list[Path], list[str]]:
    """``n`` recordings of ``bench`` (bench file ``config``, default the shipped simulated
    one), each made by ``labctl run`` in a subprocess (``--duration``: default
    :data:`RECORD_DURATION_S`; entanglement with ``--no-loops``), as a user makes them.
    Returns the files and the failures (text) of the runs that were tried again: a run that
    fails or does not end within :func:`record_timeout_s` is tried again at most ``retries``
    times, then :class:`RecordingFailed` (every file made is then deleted)."""
    say = progress or (lambda _msg: None)
    if config is None:
        config = DEFAULT_ISAQN_CONFIG if bench == "isaqn" else DEFAULT_ENTANGLEMENT_CONFIG
    duration = RECORD_DURATION_S[bench] if duration_s is None else duration_s
    paths: list[Path] = []
    failures: list[str] = []
    try:
        for k in range(n):
            say(f"replay: recording {k + 1}/{n}: labctl run {config.name} --duration {duration:g}")
            path = directory / f"replay-{bench}-{k}.h5"
            paths.append(path)
            for attempt in range(retries + 1):
                try:
                    _record_one(bench, config, path, duration)
                    break
                except RecordingFailed as exc:
                    path.unlink(missing_ok=True)
                    if attempt == retries:
                        raise
                    failures.append(str(exc))
                    say(f"replay: recording {k + 1}/{n} failed, trying again: {exc}")
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    return paths, failures


def _record_one(bench: str, config: Path, path: Path, duration_s: float) -> None:
    """One ``labctl run`` writing ``path`` (see :func:`make_recordings`)."""
    cmd = [sys.executable, "-m", "labctl", "run", str(config), "--duration", f"{duration_s:g}"]
    cmd += ["--json", "--output", str(path)]
    if bench == "entanglement":
        cmd.append("--no-loops")
    timeout_s = record_timeout_s(duration_s)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RecordingFailed(
            f"{' '.join(cmd)}: still running after {timeout_s:g} s (killed): its data time "
            f"never reached --duration {duration_s:g}; stderr ends:\n{_tail(exc.stderr)}"
        ) from None
    if proc.returncode != 0 or not path.exists():
        raise RecordingFailed(
            f"{' '.join(cmd)}: exit code {proc.returncode}, no recording; stderr ends:\n"
            f"{_tail(proc.stderr)}"
        )


class RecordingFailed(RuntimeError):
    """``labctl run`` did not make a recording for the replay figures (the command, why)."""


def record_timeout_s(duration_s: float) -> float:
    """How long one ``labctl run --duration`` may take: a normal one takes the bench's
    start-up (~10 s on the development machine) plus the data time; 120 s or 15 times the
    data time leaves room for a loaded machine and still ends a run that never stops."""
    return max(120.0, 15.0 * duration_s)


def _tail(text: str | bytes | None, lines: int = 5) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def recording_size(path: Path) -> tuple[int, int, str]:
    """(units, raw bytes, unit name) of a recording: its committed records / reads and the
    bytes of the committed rows of its ``raw/`` tables."""
    from labctl.replay_h5 import open_capture

    with open_capture(path) as cap:
        raw = 0
        for name in cap.rec.tables:
            if name.startswith("raw/"):
                info = cap.rec.info(name)
                raw += info.rows * info.dtype.itemsize * math.prod(info.row_shape)
        return cap.n_units, raw, "record" if cap.kind == "isaqn" else "read"


def _replay_whole(path: str) -> list[Any]:
    """Every update of one file, pushed through the live chain in one process."""
    from labctl.replay_h5 import replay_chunk

    return replay_chunk(path, 0, None)[1]


def _warm(path: str) -> int:
    """One untimed replay in this process (imports, Numba kernels from their cache)."""
    return len(_replay_whole(path))


def measure_replay(
    paths: Sequence[Path],
    *,
    n_workers: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Replay throughput of ``paths`` (module doc): one after another in this process, then
    on a :class:`distributed.LocalCluster` of ``n_workers`` single-threaded processes."""
    from dask.distributed import Client

    from labctl.record_fields import differences
    from labctl.replay_dask import local_cluster, replay_many
    from labctl.replay_h5 import replay_file

    say = progress or (lambda _msg: None)
    files = [str(p) for p in paths]
    sizes = [recording_size(Path(p)) for p in files]
    units = sum(s[0] for s in sizes)
    raw = sum(s[1] for s in sizes)
    out: dict[str, Any] = {
        "done": True,
        "files": files,
        "units": units,
        "unit": sizes[0][2],
        "raw_bytes": raw,
        "n_workers": n_workers,
    }

    def figures(wall: float, cpu: float) -> dict[str, float]:
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "mb_per_s": raw / wall / 1e6,
            "units_per_s": units / wall,
            "mb_per_cpu_s": raw / cpu / 1e6,
        }

    say("replay: warm-up in this process")
    _warm(files[0])
    say(f"replay: {len(files)} files one after another in this process (replay_chunk)")
    c0, t0 = time.process_time(), time.perf_counter()
    single = {p: _replay_whole(p) for p in files}
    out["single"] = figures(time.perf_counter() - t0, time.process_time() - c0)
    say(f"replay: {len(files)} files one after another with replay_file (labctl replay)")
    c0, t0 = time.process_time(), time.perf_counter()
    reports = [replay_file(p) for p in files]
    out["replay_file"] = figures(time.perf_counter() - t0, time.process_time() - c0)
    out["replay_file"]["matches_recorded"] = all(r.matches for r in reports)

    say(f"replay: starting a LocalCluster of {n_workers} workers")
    t0 = time.perf_counter()
    cluster = local_cluster(n_workers)
    try:
        client = Client(cluster)
        out["cluster_start_s"] = time.perf_counter() - t0
        try:
            say("replay: warm-up on every worker")
            t0 = time.perf_counter()
            client.run(_warm, files[0])
            out["worker_warmup_s"] = time.perf_counter() - t0
            say(f"replay: {len(files)} files with replay_many on the cluster")
            cpu0 = client.run(time.process_time)
            t0 = time.perf_counter()
            dask = replay_many(files, scheduler=cluster.scheduler_address, n_workers=n_workers)
            wall = time.perf_counter() - t0
            cpu1 = client.run(time.process_time)
            cpu = sum(cpu1[w] - cpu0[w] for w in cpu1 if w in cpu0)
            out["dask"] = figures(wall, cpu)
        finally:
            client.close()
    finally:
        cluster.close()
    out["ratio"] = out["dask"]["mb_per_s"] / out["single"]["mb_per_s"]
    out["updates"] = sum(len(u) for u in single.values())
    out["agree"] = all(
        len(dask[p]) == len(single[p]) and not differences(dask[p], single[p], rtol=0.0)
        for p in files
    )
    return out


# ---------------------------------------------------------------------------------------------
# The whole benchmark


def _write_bench(
    bench: str,
    directory: Path,
    *,
    mb: float,
    seed: int,
    repeat: int,
    flush_interval_s: float,
    verify: bool,
    config: Path | str,
    progress: Progress,
) -> dict[str, Any]:
    """Generate about ``mb`` MB of ``bench``'s raw data and :func:`measure_write` it."""
    progress(f"{bench}: generating about {mb:g} MB of raw data")
    cfg = load_bench(config)
    if bench == "isaqn":
        data = isaqn_data(cfg, isaqn_records_for(cfg, mb * 1e6), seed=seed)
    else:
        data = entanglement_data(cfg, entanglement_reads_for(cfg, mb * 1e6), seed=seed)
    return measure_write(
        data,
        directory,
        repeat=repeat,
        flush_interval_s=flush_interval_s,
        verify=verify,
        progress=progress,
    )


def _replay_sources(
    replay_files: Sequence[Path | str] | None,
    bench: str,
    recordings: int,
    duration_s: float | None,
    directory: Path,
    progress: Progress,
) -> tuple[list[Path], str, list[str]]:
    """(files to replay, where they come from, recording failures tried again)."""
    if replay_files:
        return [Path(p) for p in replay_files], "given files", []
    paths, failures = make_recordings(
        bench, recordings, directory, duration_s=duration_s, progress=progress
    )
    duration = duration_s or RECORD_DURATION_S[bench]
    source = f"{recordings} recordings made by labctl run {bench} --duration {duration:g}"
    return paths, source, failures


def run_benchmark(
    *,
    mb: float = DEFAULT_MB,
    repeat: int = 3,
    flush_interval_s: float = 1.0,
    directory: Path | str | None = None,
    benches: Sequence[str] = BENCHES,
    seed: int = 1,
    verify: bool = True,
    replay: bool = True,
    replay_bench: str = "entanglement",
    recordings: int = 4,
    record_duration_s: float | None = None,
    replay_files: Sequence[Path | str] | None = None,
    n_workers: int = 2,
    isaqn_config: Path | str = DEFAULT_ISAQN_CONFIG,
    entanglement_config: Path | str = DEFAULT_ENTANGLEMENT_CONFIG,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark (module doc) and return the figures: ``write`` per bench in
    ``benches``, and ``replay`` (of ``replay_files``, or of ``recordings`` new recordings of
    ``replay_bench``, deleted afterwards) unless ``replay`` is False."""
    say = progress or (lambda _msg: None)
    unknown = sorted(set(benches) - set(BENCHES))
    if unknown:
        raise ValueError(f"benches: {unknown} unknown, expected some of {list(BENCHES)}")
    if replay_bench not in BENCHES:
        raise ValueError(f"replay_bench {replay_bench!r}: expected one of {list(BENCHES)}")
    result: dict[str, Any] = {
        "mb_per_case": mb,
        "repeat": repeat,
        "flush_interval_s": flush_interval_s,
        "seed": seed,
        "cpus": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "target_overhead_pct": TARGET_OVERHEAD_PCT,
        "write": {},
        "replay": {"done": False, "reason": "not asked (--no-replay)"},
    }
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-record-"))
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a directory")
        result["directory"] = str(d)
        made: list[Path] = []
        try:
            # the recordings first: labctl run is a real-time simulation, best not started
            # right after the write benchmark freed gigabytes of page cache and buffers
            paths: list[Path] = []
            if replay:
                try:
                    paths, source, failures = _replay_sources(
                        replay_files, replay_bench, recordings, record_duration_s, d, say
                    )
                    made = [] if replay_files else paths
                except RecordingFailed as exc:
                    result["replay"] = {"done": False, "failed": True, "reason": str(exc)}
            for bench in BENCHES:
                if bench in benches:
                    result["write"][bench] = _write_bench(
                        bench,
                        d,
                        mb=mb,
                        seed=seed,
                        repeat=repeat,
                        flush_interval_s=flush_interval_s,
                        verify=verify,
                        config=isaqn_config if bench == "isaqn" else entanglement_config,
                        progress=say,
                    )
            if paths:
                result["replay"] = {
                    **measure_replay(paths, n_workers=n_workers, progress=say),
                    "source": source,
                    "recording_failures": failures,
                }
        finally:
            for p in made:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    result["load_average_end"] = list(os.getloadavg())
    result["target_met"] = all(w["target_met"] for w in result["write"].values())
    return result


# ---------------------------------------------------------------------------------------------
# CLI


def add_parser(bench_subparsers: Any) -> None:
    """Register the ``record`` sub-command on an argparse sub-parsers object."""
    parser = bench_subparsers.add_parser(
        "record",
        help="recording engine vs plain h5py writes of the same raw data (MB/s, overhead)",
        description=(
            "Write the same realistic raw data (ISAQN scope records, entanglement tag "
            "batches) with the recording engine and with plain h5py writes, alternating; "
            "print MB/s of each, their ratio and the recorder's overhead (target <= 10 %)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--mb",
        type=float,
        default=DEFAULT_MB,
        help=f"payload per bench and case, MB (10**6 bytes; default {DEFAULT_MB:g})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed writes per case, alternating, median kept (default 3)",
    )
    parser.add_argument(
        "--flush-interval-s",
        type=float,
        default=1.0,
        help="recorder commit / plain flush interval, s (default 1, the recorder's default)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="write the files here (deleted after each run; default: a temporary directory)",
    )
    parser.add_argument(
        "--bench",
        choices=BENCHES,
        action="append",
        default=None,
        help="only this bench's raw data (repeatable; default: both)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed of the data")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reading the first repetition's files back",
    )
    parser.add_argument(
        "--no-replay", action="store_true", help="skip the replay figures (single vs Dask)"
    )
    parser.add_argument(
        "--replay-bench",
        choices=BENCHES,
        default="entanglement",
        help="bench whose recordings are made for the replay figures (default entanglement)",
    )
    parser.add_argument(
        "--recordings",
        type=int,
        default=4,
        help="recordings made for the replay figures (default 4; ~18 s each)",
    )
    parser.add_argument(
        "--record-duration",
        type=float,
        default=None,
        metavar="S",
        help="labctl run --duration of each recording (default: 8 s entanglement, 3 s ISAQN)",
    )
    parser.add_argument(
        "--replay-files",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE.h5",
        help="replay these recordings instead of making new ones (kept)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Dask LocalCluster workers (default 2)"
    )
    parser.set_defaults(func=run_bench_record)


def _validate(args: argparse.Namespace) -> str | None:
    if not args.mb > 0:
        return f"--mb: got {args.mb}, expected > 0"
    if args.repeat < 1:
        return f"--repeat: got {args.repeat}, expected >= 1"
    if not args.flush_interval_s > 0:
        return f"--flush-interval-s: got {args.flush_interval_s}, expected > 0"
    if args.dir is not None and not args.dir.is_dir():
        return f"--dir: {args.dir} is not a directory"
    if args.recordings < 1:
        return f"--recordings: got {args.recordings}, expected >= 1"
    if args.record_duration is not None and not args.record_duration > 0:
        return f"--record-duration: got {args.record_duration}, expected > 0"
    if args.workers < 1:
        return f"--workers: got {args.workers}, expected >= 1"
    for f in args.replay_files or ():
        if not f.is_file():
            return f"--replay-files: {f} is not a file"
    return None


def run_bench_record(args: argparse.Namespace) -> int:
    """Execute ``labctl bench record``; returns the exit code (0 ok, 2 usage, 1 mismatch)."""
    problem = _validate(args)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    result = run_benchmark(
        mb=args.mb,
        repeat=args.repeat,
        flush_interval_s=args.flush_interval_s,
        directory=args.dir,
        benches=tuple(args.bench or BENCHES),
        seed=args.seed,
        verify=not args.no_verify,
        replay=not args.no_replay,
        replay_bench=args.replay_bench,
        recordings=args.recordings,
        record_duration_s=args.record_duration,
        replay_files=args.replay_files,
        n_workers=args.workers,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(result))
    else:
        console = Console()
        print_table(result, console)
        print_replay(result, console)
    bad = [
        f"{b} write: the files differ"
        for b, w in result["write"].items()
        if w["identical"] is False
    ]
    rp = result["replay"]
    if rp["done"] and not rp["agree"]:
        bad.append("replay: the Dask updates differ from the single-process ones")
    if rp.get("failed"):
        bad.append(f"replay not measured: {rp['reason']}")
    if bad:
        print(f"{_PROG}: error: {'; '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def print_table(result: dict[str, Any], console: Console) -> None:
    """The side-by-side table of :func:`run_benchmark`'s figures."""
    ok = {True: "ok", False: "MISSED"}
    load = ", ".join(f"{x:.1f}" for x in result["load_average_start"])
    console.print(
        f"{_PROG}: h5py {result['h5py']}, HDF5 {result['hdf5']}, {result['cpus']} CPUs "
        f"(load average at start {load}), files in {result['directory']}",
        markup=False,
        highlight=False,
    )
    if not result["write"]:
        return
    console.print(
        f"write: median of {result['repeat']} alternating writes per case, commit/flush every "
        f"{result['flush_interval_s']:g} s",
        markup=False,
        highlight=False,
    )
    t = RichTable(title="write: recorder vs plain h5py (same datasets, same payload)")
    t.add_column("bench", no_wrap=True)
    t.add_column("case", no_wrap=True)
    for col in ("MB/s", "median s", "CPU s", "MB/CPU s", "vs plain"):
        t.add_column(col, justify="right", no_wrap=True)
    for bench, w in result["write"].items():
        for case, label in (("recorder", "recorder"), ("plain", "plain h5py")):
            f = w[case]
            t.add_row(
                bench,
                label,
                f"{f['mb_per_s']:.0f}",
                f"{f['median_wall_s']:.2f}",
                f"{f['median_cpu_s']:.2f}",
                f"{f['mb_per_cpu_s']:.0f}",
                f"{w['ratio']:.2f}x" if case == "recorder" else "",
            )
    console.print(t)
    for bench, w in result["write"].items():
        r = w["recorder"]
        same = "same payload" if w["same_payload"] else "PAYLOAD DIFFERS"
        ident = {True: "files identical", False: "FILES DIFFER", None: "not read back"}
        console.print(
            f"{bench}: {w['description']}, {w['payload_bytes'] / 1e6:.0f} MB; recorder overhead "
            f"{w['overhead_pct']:+.1f} % (CPU time {w['overhead_cpu_pct']:+.1f} %), target <= "
            f"{w['target_overhead_pct']:g} %: {ok[w['target_met']]}; {same}, "
            f"{ident[w['identical']]}; queue peak {r['queue_peak_bytes'] / 2**20:.0f} of "
            f"{r['queue_max_bytes'] / 2**20:.0f} MiB, producer waited {r['producer_waits']}x, "
            f"overruns {r['overruns']} ({r['rows_lost']} rows lost); runs (s): recorder "
            f"{_times(r['wall_s'])}, plain {_times(w['plain']['wall_s'])}",
            markup=False,
            highlight=False,
        )
        for p in w["problems"]:
            console.print(f"  {p}", markup=False, highlight=False)


def _times(xs: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


def print_replay(result: dict[str, Any], console: Console) -> None:
    """The replay table of :func:`run_benchmark`'s figures."""
    rp = result["replay"]
    if not rp["done"]:
        console.print(f"replay: not measured: {rp['reason']}", markup=False, highlight=False)
        return
    t = RichTable(title=f"replay: {len(rp['files'])} files, {rp['raw_bytes'] / 1e6:.0f} MB raw")
    t.add_column("how", no_wrap=True)
    for col in ("MB/s", f"{rp['unit']}s/s", "wall s", "CPU s", "vs single"):
        t.add_column(col, justify="right", no_wrap=True)
    rows = (
        ("single", "1 process (replay_chunk)"),
        ("replay_file", "1 process (replay_file)"),
        ("dask", f"Dask, {rp['n_workers']} workers"),
    )
    for key, label in rows:
        f = rp[key]
        t.add_row(
            label,
            f"{f['mb_per_s']:.1f}",
            f"{f['units_per_s']:.1f}",
            f"{f['wall_s']:.2f}",
            f"{f['cpu_s']:.2f}",
            f"{f['mb_per_s'] / rp['single']['mb_per_s']:.2f}x",
        )
    console.print(t)
    console.print(
        f"replay: {rp['source']}; {rp['units']} {rp['unit']}s, {rp['updates']} updates; Dask "
        f"updates identical to the single process: {rp['agree']}; replay_file matches the "
        f"recorded updates: {rp['replay_file']['matches_recorded']}; cluster start-up "
        f"{rp['cluster_start_s']:.1f} s and worker warm-up {rp['worker_warmup_s']:.1f} s not "
        "included (Dask CPU s: the workers' process time)",
        markup=False,
        highlight=False,
    )
    for failure in rp["recording_failures"]:
        console.print(f"replay: a recording was made again: {failure}", markup=False)
