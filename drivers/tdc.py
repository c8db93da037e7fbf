"""Capability base for time-to-digital converters (time taggers).

A time tagger timestamps detector pulses on several inputs. Callers use the
per-channel settings declared by every model (``enabled``, ``threshold_v``,
``delay_ps``), the bin width (``bin_width_ps``) and the stream methods:
:meth:`TimeTagger.start_stream`, :meth:`TimeTagger.read_tags` (returns a
:class:`TagBatch`) and :meth:`TimeTagger.stop_stream`. Timestamps are int64
picoseconds on the tagger's own time axis, unwrapped and monotonic across
batches for as long as a stream runs.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from drivers.instrument import Instrument


@dataclass(frozen=True)
class TagBatch:
    """Time tags read from a stream, sorted by time.

    ``channel[k]`` is the input of event k (uint8) and ``timestamp_ps[k]`` its
    time in ps (int64). Every event earlier than ``horizon_ps`` has now been
    delivered (later batches hold only events at or after it).
    ``lost_events`` counts events the tagger reported dropped before or
    within this batch (buffer overflow); ``overflow`` is True when any loss
    was reported.
    """

    channel: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    timestamp_ps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lost_events: int = 0
    overflow: bool = False
    horizon_ps: int = 0

    def __post_init__(self) -> None:
        if self.channel.dtype != np.uint8 or self.timestamp_ps.dtype != np.int64:
            raise TypeError("TagBatch needs channel uint8 and timestamp_ps int64 arrays")
        if self.channel.shape != self.timestamp_ps.shape or self.channel.ndim != 1:
            raise ValueError("channel and timestamp_ps must be 1-D arrays of one length")

    def __len__(self) -> int:
        return int(self.timestamp_ps.size)

    def times_ps(self, channel: int) -> np.ndarray:
        """Timestamps (int64 ps, sorted) of one input."""
        return self.timestamp_ps[self.channel == channel]

    def counts(self, channels: Sequence[int]) -> dict[int, int]:
        """Number of events per input."""
        return {ch: int(np.count_nonzero(self.channel == ch)) for ch in channels}

    @classmethod
    def concatenate(cls, batches: Sequence[TagBatch]) -> TagBatch:
        """Join consecutive batches of one stream (they are already in time order)."""
        if not batches:
            return cls()
        return cls(
            channel=np.concatenate([b.channel for b in batches]).astype(np.uint8, copy=False),
            timestamp_ps=np.concatenate([b.timestamp_ps for b in batches]).astype(
                np.int64, copy=False
            ),
            lost_events=sum(b.lost_events for b in batches),
            overflow=any(b.overflow for b in batches),
            horizon_ps=max(b.horizon_ps for b in batches),
        )


class TimeTagger(Instrument, abc.ABC):
    """A multi-input time tagger that streams time tags."""

    instrument_class = "tdc"
    #: settings every tagger model declares (checked by the driver meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "enabled",
        "threshold_v",
        "delay_ps",
        "bin_width_ps",
    )
    #: the inputs of the model
    channels: ClassVar[tuple[int, ...]] = ()

    @abc.abstractmethod
    def start_stream(self) -> None:
        """Start streaming time tags of the enabled inputs (a new time-tag stream)."""

    @abc.abstractmethod
    def stop_stream(self) -> None:
        """Stop streaming; tags not yet read are discarded."""

    @property
    @abc.abstractmethod
    def is_streaming(self) -> bool:
        """True between :meth:`start_stream` and :meth:`stop_stream` on this driver."""

    @abc.abstractmethod
    def read_tags(self, max_wait_s: float, *, until_ps: int | None = None) -> TagBatch:
        """Read tags that have arrived.

        Waits up to ``max_wait_s`` for data. Without ``until_ps``: returns as
        soon as some data has arrived, with everything received so far (an
        empty batch if nothing came). With ``until_ps``: returns once every
        event earlier than ``until_ps`` has arrived
        (``batch.horizon_ps >= until_ps``), else raises InstrumentTimeout and
        keeps what it read for the next call.
        """

    @abc.abstractmethod
    def count_rate_hz(self, channel: int) -> float:
        """The tagger's own count rate of one input (its counters, not the stream)."""

    def safe_state(self) -> None:
        """Stop streaming (a time tagger has no output to switch off)."""
        self.stop_stream()
