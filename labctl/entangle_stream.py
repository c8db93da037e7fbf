"""One time-tag stream from one or two taggers: channels relabelled, clocks aligned, merged.

The entanglement job reads :class:`~drivers.tdc.TagBatch` es from each tagger and pushes them
here; :meth:`TagStream.pop` returns the merged stream on the reference tagger's clock, sorted,
with each detector's *stream id* (its index in the bench file's channel list), ready for
:func:`dsp.coincidence.coincidence_process`. Live and replay feed the same class.

With two taggers the other tagger's clock is found and followed from the photon pairs
(:mod:`dsp.clocksync`):

1. *search*: once ``search_s`` of both streams (plus the +-``max_offset`` margin) has arrived,
   :func:`~dsp.clocksync.coarse_clock` correlates every tag of one chunk of the other tagger
   against every tag of the reference (all cross-tagger pairs add to one peak at the bin size
   used) under a grid of drift hypotheses. A peak below ``min_significance`` retries on the
   next chunk;
2. *refine*: :func:`~dsp.clocksync.refine_clock` narrows offset and drift on the sync pair
   (below) with a 10 ns residual histogram under a 0.05 ppm drift grid;
3. *track*: :func:`~dsp.clocksync.track_process` follows offset and drift frame by frame on
   one cross-tagger channel pair (``sync``): the reference tagger's channel a against the
   other's channel b. Its window keeps the central Franson peak and both side peaks: they
   are symmetric, so their centroid is the central one, and their sum does not depend on
   the interferometer phases (the central peak alone fades when the pair's phase sum nears
   pi, which a window on it alone would mistake for a lost lock and then take a side peak
   for the centre). The price is a ~550 ps wide peak per frame, so the offset regression
   has a 10 s memory. The first ``ACQUISITION_FRAMES`` locked frames (2 s) converge from
   the refined model and are not handed on;
4. *merge*: the other tagger's tags, mapped frame by frame, are merged with the reference's up
   to the time both are complete.

Tags before the end of the tracker's acquisition (~2 s) are dropped, so the
merged stream starts at one time for both taggers, with the clocks already locked. A batch
with lost events (tagger buffer overflow) marks the span since that
tagger's previous horizon dead (:meth:`TagStream.pop` returns it for the coincidence engine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.tdc import TagBatch
from dsp.clocksync import (
    CoarseClock,
    TrackerConfig,
    TrackerState,
    coarse_clock,
    merge_tags,
    refine_clock,
    track_process,
)

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
PS_PER_S = 1_000_000_000_000
#: fine search after the coarse one: drift grid step and residual histogram bin
REFINE_STEP_PPM = 0.05
REFINE_BIN_PS = 10_000
#: locked tracking frames (2 s) before the merged stream starts: the acquisition's mapping is
#: still tens of ps off
ACQUISITION_FRAMES = 40


@dataclass(frozen=True)
class StreamChunk:
    """Merged tags on the reference clock, complete up to ``horizon_ps``."""

    timestamp_ps: I64
    channel: U8  #: stream ids
    horizon_ps: int
    dead_ps: I64  #: (k, 2) new dead intervals [start, stop) on the reference clock


@dataclass(frozen=True)
class ClockStatus:
    """What the stream knows of the other tagger's clock."""

    state: str  #: "single" (one tagger), "searching", "tracking"
    offset_ps: float  #: other - reference at the current frame (nan until found)
    drift_ppm: float
    locked_fraction: float  #: of the frames tracked in the last status interval
    coarse: CoarseClock | None = None


class _Pending:
    """Tags of one tagger not yet handed on: times, stream ids, horizon, dead spans."""

    def __init__(self) -> None:
        self.t = np.zeros(0, np.int64)
        self.c = np.zeros(0, np.uint8)
        self.horizon = -(1 << 62)
        self.first: int | None = None
        self.dead: list[tuple[int, int]] = []

    def add(self, t: I64, c: U8, horizon: int, lost: bool) -> None:
        if lost and self.first is not None:
            stop = int(t[0]) if t.size else horizon
            if stop > self.horizon:
                self.dead.append((self.horizon, stop))
        if t.size:
            if self.first is None:
                self.first = int(t[0])
            self.t = np.concatenate([self.t, t])
            self.c = np.concatenate([self.c, c])
        self.horizon = max(self.horizon, horizon, int(t[-1]) + 1 if t.size else horizon)

    def take_before(self, limit: int) -> tuple[I64, U8]:
        k = int(np.searchsorted(self.t, limit, side="left"))
        out = self.t[:k], self.c[:k]
        self.t, self.c = self.t[k:], self.c[k:]
        return out

    def drop_before(self, limit: int) -> None:
        self.take_before(limit)


class TagStream:
    """Relabel, align and merge the tags of the channels' taggers (see module docstring)."""

    def __init__(
        self,
        channels: Sequence[tuple[str, int]],
        reference: str,
        *,
        sync: tuple[int, int] | None = None,
        max_offset_s: float = 0.05,
        max_drift_ppm: float = 10.0,
        search_s: float = 0.1,
        search_bin_ps: int = 100_000,
        min_significance: float = 7.0,
        tracker: TrackerConfig | None = None,
    ) -> None:
        """``channels[k]`` = (tagger, input) of stream id k; ``sync`` = (stream id on the
        reference tagger, stream id on the other) of the pair the tracker follows."""
        self.channels = tuple((str(t), int(i)) for t, i in channels)
        if len(self.channels) > 255:
            raise ValueError("channels: at most 255 detectors")
        taggers = sorted({t for t, _ in self.channels})
        if reference not in taggers or len(taggers) > 2:
            raise ValueError(f"reference: {reference!r} must be one of at most 2 taggers")
        self.reference = reference
        self.other = next((t for t in taggers if t != reference), None)
        self._lut = {tg: np.full(256, 255, np.uint8) for tg in taggers}
        for k, (tg, inp) in enumerate(self.channels):
            self._lut[tg][inp] = k
        self._pending = {tg: _Pending() for tg in taggers}
        self.max_offset_ps = round(max_offset_s * PS_PER_S)
        self.max_drift_ppm = float(max_drift_ppm)
        self.search_ps = round(search_s * PS_PER_S)
        self.search_bin_ps = int(search_bin_ps)
        self.min_significance = float(min_significance)
        self.coarse: CoarseClock | None = None
        self._state: TrackerState | None = None
        self._frames_locked = 0
        self._frames = 0
        self._start_ps: int | None = None  # reference time the merged stream starts at
        if self.other is not None:
            if sync is None:
                raise ValueError("sync: two taggers need a cross-tagger channel pair to track")
            a, b = sync
            if self.channels[a][0] != reference or self.channels[b][0] != self.other:
                raise ValueError(
                    f"sync: ({a}, {b}) must be a channel of {reference} then one of {self.other}"
                )
            self.sync = (int(a), int(b))
            # the window holds the central and both side Franson peaks (see the docstring)
            self.tracker = tracker or TrackerConfig(
                frame_ps=50_000_000_000,
                min_window_ps=3_000,
                max_window_ps=40_000,
                memory_ps=10 * PS_PER_S,
                n_bins=128,
            )
        self.refine_significance = math.nan
        #: significance of the latest coarse search (nan before the first)
        self.last_significance = math.nan
        self._locked_total = 0
        self._converged = False
        self._start_ps_final: int | None = None
        self._sync_new = np.zeros(0, np.int64)  # reference sync tags not yet tracked
        self._mapped_t = np.zeros(0, np.int64)  # other tagger's tags, mapped, not yet merged
        self._mapped_c = np.zeros(0, np.uint8)
        self._mapped_horizon = -(1 << 62)

    # -- input -------------------------------------------------------------------------------
    def push(self, tagger: str, batch: TagBatch) -> None:
        """Add a batch read from ``tagger`` (its own clock)."""
        lut = self._lut.get(tagger)
        if lut is None:
            raise ValueError(f"tagger: {tagger!r} feeds no channel of this stream")
        ids = lut[batch.channel]
        keep = ids != 255
        t, c = batch.timestamp_ps[keep], ids[keep]
        self._pending[tagger].add(t, c, int(batch.horizon_ps), bool(batch.lost_events))
        if tagger == self.reference and self._state is not None:
            self._sync_new = np.concatenate([self._sync_new, t[c == self.sync[0]]])

    # -- output ------------------------------------------------------------------------------
    def pop(self) -> StreamChunk | None:
        """The merged tags that are complete now (None while the clock search waits)."""
        ref = self._pending[self.reference]
        if self.other is None:
            t, c = ref.take_before(ref.horizon)
            return self._chunk(t, c, ref.horizon, ref)
        if self._state is None and not self._search():
            return None
        if not self._track():
            return None  # still acquiring: nothing is handed on before the clocks are locked
        limit = min(ref.horizon, self._mapped_horizon)
        ta, ca = ref.take_before(limit)
        k = int(np.searchsorted(self._mapped_t, limit, side="left"))
        tb, cb = self._mapped_t[:k], self._mapped_c[:k]
        self._mapped_t, self._mapped_c = self._mapped_t[k:], self._mapped_c[k:]
        t, c = merge_tags(ta, ca, tb, cb)
        return self._chunk(t, c, limit, ref)

    def _chunk(self, t: I64, c: U8, horizon: int, ref: _Pending) -> StreamChunk:
        dead = list(ref.dead)
        ref.dead.clear()
        if self.other is not None:
            other = self._pending[self.other]
            if self._state is not None:
                model = self._state.model
                for lo, hi in other.dead:
                    lo_a, hi_a = model.to_a_ps(np.array([lo, hi], np.int64))
                    dead.append((int(lo_a), int(hi_a)))
            other.dead.clear()
        start = self._start_ps if self._start_ps is not None else -(1 << 62)
        dead = [(max(lo, start), hi) for lo, hi in dead if hi > start]
        arr = np.array(sorted(dead), dtype=np.int64).reshape(-1, 2)
        return StreamChunk(t, c, int(horizon), arr)

    def _search(self) -> bool:
        assert self.other is not None
        ref, oth = self._pending[self.reference], self._pending[self.other]
        if ref.first is None or oth.first is None:
            return False
        r = self.max_offset_ps
        b0 = max(oth.first, ref.first + r) + 1
        if oth.horizon < b0 + self.search_ps or ref.horizon < b0 + self.search_ps + r:
            return False
        found = coarse_clock(
            ref.t,
            oth.t,
            max_offset_ps=r,
            max_drift_ppm=self.max_drift_ppm,
            duration_ps=self.search_ps,
            bin_ps=self.search_bin_ps,
            start_b_ps=b0,
        )
        self.last_significance = float(found.search.significance)
        if found.search.significance < self.min_significance:
            # not found in this chunk: forget it and try the next one
            oth.drop_before(b0 + self.search_ps)
            ref.drop_before(b0 + self.search_ps - r)
            oth.first = int(oth.t[0]) if oth.t.size else None
            ref.first = int(ref.t[0]) if ref.t.size else None
            return False
        self.coarse = found
        # refine on the sync pair alone: offset to ~10 ns, drift to ~0.05 ppm
        a_id, b_id = self.sync
        tb = oth.t[(oth.c == b_id) & (oth.t >= b0) & (oth.t < b0 + self.search_ps)]
        ta = ref.t[ref.c == a_id]
        smear = found.drift_step_ppm * 1e-6 * self.search_ps
        model, self.refine_significance = refine_clock(
            ta,
            tb,
            found.model(),
            half_window_ps=1.5 * self.search_bin_ps + smear,
            drift_span_ppm=0.6 * found.drift_step_ppm,
            drift_step_ppm=REFINE_STEP_PPM,
            bin_ps=REFINE_BIN_PS,
        )
        start_b = b0
        self._state = TrackerState.initial(
            model, self.tracker, start_b_ps=start_b, half_window_ps=self.tracker.max_window_ps
        )
        self._start_ps = int(model.to_a_ps(np.array([start_b], np.int64))[0])
        oth.drop_before(start_b)
        ref.drop_before(self._start_ps)
        self._sync_new = ref.t[ref.c == self.sync[0]]
        return True

    def _track(self) -> bool:
        """Feed the tracker; True once the stream is handed on (the tracker has converged)."""
        assert self.other is not None and self._state is not None
        ref, oth = self._pending[self.reference], self._pending[self.other]
        # the tracker reads the new reference sync tags; ref.t keeps all of them for the merge
        new_a, self._sync_new = self._sync_new, np.zeros(0, np.int64)
        tb, cb = oth.take_before(oth.horizon)
        result, self._state = track_process(
            new_a,
            tb,
            self._state,
            self.tracker,
            channel_b=cb,
            horizon_a_ps=ref.horizon,
            horizon_b_ps=oth.horizon,
            sync_channels_b=[self.sync[1]],
        )
        self._frames += len(result.frames)
        self._frames_locked += sum(f.locked for f in result.frames)
        keep_from = 0  # first mapped tag handed on: the acquisition's frames are not
        if not self._converged:
            keep_from = result.t_b_in_a_ps.size
            done = 0
            for f in result.frames:
                done += f.n_b
                self._locked_total += f.locked
                if self._locked_total >= ACQUISITION_FRAMES:
                    self._converged, keep_from = True, done
                    break
        t_new, c_new = result.t_b_in_a_ps[keep_from:], result.channel_b[keep_from:]
        if self._converged and self._start_ps_final is None and t_new.size:
            # the merged stream starts at the first mapped tag after acquisition (a time that
            # does not depend on how the streams were cut into batches)
            self._start_ps_final = self._start_ps = int(t_new[0])
            ref.drop_before(self._start_ps)
        if t_new.size:
            self._mapped_t = np.concatenate([self._mapped_t, t_new])
            self._mapped_c = np.concatenate([self._mapped_c, c_new])
        st = self._state
        if st.frame_start_ps is not None:
            # every other-tagger tag before the next frame start is mapped
            mapped = st.frame_start_ps - st.offset_ps
            self._mapped_horizon = max(self._mapped_horizon, math.floor(mapped))
        if self._start_ps_final is None:
            ref.drop_before(self._mapped_horizon)
            ref.dead.clear()
            oth.dead.clear()
            return False
        return True

    # -- status ------------------------------------------------------------------------------
    @property
    def reference_horizon_ps(self) -> int:
        """Every reference-tagger tag before this time has been pushed."""
        return self._pending[self.reference].horizon

    def clock_status(self) -> ClockStatus:
        """The other tagger's clock; resets the locked-frame count."""
        if self.other is None:
            return ClockStatus("single", 0.0, 0.0, 1.0)
        if self._state is None:
            return ClockStatus("searching", math.nan, math.nan, 0.0)
        frac = self._frames_locked / self._frames if self._frames else math.nan
        self._frames = self._frames_locked = 0
        st = self._state
        return ClockStatus("tracking", st.offset_ps, st.drift_ppm, frac, self.coarse)
