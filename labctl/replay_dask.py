"""Batch replay on Dask: many recordings, or recordings larger than memory.

Each recording is cut into chunks of ``chunk_units`` records / reads. Chunk k of a file is one
Dask task, :func:`labctl.replay_h5.replay_chunk`, that takes the feed left by chunk k - 1 (the
whole DSP state: calibration, band locks, phase unwrapping, clock tracking, scans, histograms)
and returns it with the chunk's updates. The chain of a file is therefore sequential, exactly
as a single-process replay pushes it, and the results are identical (not approximately:
the same code on the same data in the same order); different files run in parallel on the
workers, and no task holds more than one chunk of raw data.

Every task opens its file itself (:func:`labctl.replay_h5.open_capture`: in SWMR read mode
when the writer did not close it), so no h5py object ever travels between processes (the
distributed scheduler would reopen it without SWMR).

By default a :class:`distributed.LocalCluster` with ``n_workers`` single-threaded worker
processes is started and stopped; ``scheduler="tcp://host:8786"`` uses a running cluster
instead, whose workers must have labctl installed and see the files at the same paths.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.replay_h5 import Update, open_capture, replay_chunk

#: raw bytes per chunk when ``chunk_units`` is not given
DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024
Progress = Callable[[str, int, int], None]  # (file, units done, units total)


@dataclass(frozen=True)
class FilePlan:
    """One file's chunking: units in the file and the chunk boundaries."""

    path: str
    units: int
    bounds: tuple[tuple[int, int], ...]


def plan_file(path: Path | str, chunk_units: int | None = None) -> FilePlan:
    """How ``path`` is cut: ``chunk_units`` units per chunk, or about
    :data:`DEFAULT_CHUNK_BYTES` of raw data per chunk."""
    with open_capture(path) as cap:
        n = cap.n_units
        if chunk_units is None:
            raw = 0
            for name in cap.rec.tables:
                if name.startswith("raw/"):
                    info = cap.rec.info(name)
                    raw += info.rows * info.dtype.itemsize * math.prod(info.row_shape)
            per_unit = raw / n if n else 1.0
            chunk_units = max(1, math.floor(DEFAULT_CHUNK_BYTES / max(per_unit, 1.0)))
    if chunk_units < 1:
        raise ValueError(f"chunk_units {chunk_units}: expected >= 1")
    bounds = tuple((a, min(a + chunk_units, n)) for a in range(0, n, chunk_units))
    return FilePlan(str(path), n, bounds)


def local_cluster(n_workers: int = 2) -> Any:
    """A :class:`distributed.LocalCluster` of ``n_workers`` single-threaded processes for
    replay. Its nanny would start the workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    makes glibc hand freed chunk buffers back to the system at once: measured on the 2-vCPU
    development machine, that tripled page faults and made a 2-worker replay of 4 files
    0.6-0.9x as fast as one process (1.3-1.5x without it). The variable is left unset."""
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # its HTTP server on a free port (8787 may be taken)
            silence_logs=logging.WARNING,  # not every worker start and stop on stderr
        )


def _chunk_task(path: str, start: int, stop: int, previous: Any) -> tuple[Any, list[Update]]:
    feed = None if previous is None else previous[0]
    return replay_chunk(path, start, stop, feed)


def replay_many(
    paths: Sequence[Path | str],
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    chunk_units: int | None = None,
    progress: Progress | None = None,
) -> dict[str, list[Update]]:
    """Replay every file on Dask (module doc); returns each file's updates, numbered from the
    run's first, exactly as :func:`labctl.replay_h5.replay_chunk` over the whole file gives
    them. ``progress(file, units_done, units_total)`` after every chunk."""
    from dask.distributed import Client, as_completed

    plans = [plan_file(p, chunk_units) for p in paths]
    cluster = None
    if scheduler is None:
        cluster = local_cluster(n_workers)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        meta: dict[Any, tuple[str, int]] = {}
        results: dict[str, dict[int, list[Update]]] = {p.path: {} for p in plans}
        for plan in plans:
            previous = None
            for k, (a, b) in enumerate(plan.bounds):
                fut = client.submit(_chunk_task, plan.path, a, b, previous, pure=False)
                updates = client.submit(operator.itemgetter(1), fut, pure=False)
                meta[updates] = (plan.path, k)
                previous = fut
        done = {p.path: 0 for p in plans}
        totals = {p.path: p.units for p in plans}
        bounds = {p.path: p.bounds for p in plans}
        for fut in as_completed(list(meta)):
            path, k = meta[fut]
            results[path][k] = fut.result()
            a, b = bounds[path][k]
            done[path] += b - a
            if progress is not None:
                progress(path, done[path], totals[path])
            fut.release()
        return {
            path: [u for k in sorted(chunks) for u in chunks[k]] for path, chunks in results.items()
        }
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
