"""The ISAQN chain from scope records to statuses, shared by the live job and replay.

:class:`IsaqnFeed` takes :class:`Record` s in acquisition order, whatever their source (the
scope through :class:`labctl.isaqn_job.IsaqnJob`, or a recording through
:mod:`labctl.replay_h5`), and returns a :class:`NetworkStatus` every ``update_s`` of data:

1. ``electronic`` records (LO off) and ``shot`` records (signal off) are kept for the
   calibration;
2. :meth:`IsaqnFeed.calibrate` (the live job calls it after the calibration records; else
   the first ``data`` record does) calibrates the receiver
   (:meth:`IsaqnReceiver.calibrate`); every band synchronises on the first data record
   (stream time 0);
3. every data record is processed (:meth:`IsaqnReceiver.process`) and fed to the
   :class:`NetworkMonitor`; a band that lost lock is re-synchronised on the next record.

Nothing here touches an instrument: the feed is the dsp half of the job, so a replay runs the
code that ran live. It pickles (for chunked replay on Dask, :mod:`labctl.replay_dask`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labctl.isaqn_config import IsaqnConfig
from labctl.isaqn_monitor import NetworkMonitor
from labctl.isaqn_pipeline import IsaqnReceiver, NodeSequence, RecordResult, node_sequence
from labctl.isaqn_status import NetworkStatus

Progress = Callable[[str], None]
#: sees every record pushed and what the receiver made of it (None for calibration records)
RecordObserver = Callable[["Record", RecordResult | None], None]
#: record kinds, in the order a run acquires them
KINDS = ("electronic", "shot", "data")


class FeedError(ValueError):
    """Records that the chain cannot use (what is wrong and which record)."""


@dataclass
class Record:
    """One scope record: complex volts I + jQ and the raw codes for the recorder."""

    samples: np.ndarray  # complex128 volts
    codes_i: np.ndarray  # int16
    codes_q: np.ndarray  # int16
    volts_per_code: tuple[float, float]
    offset_v: tuple[float, float]
    index: int
    kind: str  # "electronic" (LO off), "shot" (signal off) or "data"
    overloads: int = 0  # channels whose ADC clipped in this record


def volts_from_codes(
    codes: np.ndarray, volts_per_code: float, offset_v: float
) -> np.ndarray:  # float64 [V]
    """Volts of ADC codes, computed exactly as :class:`drivers.scope.Waveform` does."""
    return codes.astype(np.float64) * volts_per_code + offset_v


class IsaqnFeed:
    """Calibration, synchronisation and streaming analysis of an ISAQN network's records.

    ``seed`` is the bench seed (it fixes the nodes' symbol sequences), ``wavelength_m`` the
    laser's wavelength (strain figures). ``progress`` gets one line per calibration result,
    lock and re-lock. ``observer`` (settable later, e.g. by the dashboard) sees every record
    and its :class:`RecordResult` on the pushing thread, after the monitors took it."""

    def __init__(
        self,
        config: IsaqnConfig,
        seed: int,
        wavelength_m: float,
        *,
        progress: Progress | None = None,
        observer: RecordObserver | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self.sequences: list[NodeSequence] = [
            node_sequence(node, seed, k) for k, node in enumerate(config.nodes)
        ]
        self.receiver = IsaqnReceiver(config, self.sequences)
        self.monitor = NetworkMonitor(config, self.receiver, wavelength_m=wavelength_m)
        self.progress = progress
        self.record_s = config.record_length / config.sample_rate_hz
        self.data_s = 0.0  #: data analysed so far [s]
        self.records = 0  #: records pushed (calibration included)
        self.overloads = 0  #: ADC overloads so far (calibration included)
        self.updates = 0  #: statuses emitted
        self._next_update_s = config.update_s
        self._electronic: list[np.ndarray] = []
        self._shot: list[np.ndarray] = []
        self._streaming = False
        self._calibrated = False
        self._messages: list[str] = []  # what happened since the previous status

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["progress"] = None  # live callbacks do not travel to a Dask worker
        state["observer"] = None
        return state

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def push(self, record: Record) -> NetworkStatus | None:
        """Add the next record; the status if this record completes an update interval."""
        if record.kind not in KINDS:
            raise FeedError(f"record {record.index}: kind {record.kind!r}; expected one of {KINDS}")
        self.records += 1
        self.overloads += int(record.overloads)
        if record.kind != "data":
            if self._streaming or self._calibrated:
                raise FeedError(
                    f"record {record.index}: a {record.kind} record after the calibration"
                )
            (self._electronic if record.kind == "electronic" else self._shot).append(record.samples)
            if self.observer is not None:
                self.observer(record, None)
            return None
        if not self._streaming:
            self._start(record)
        elif self.receiver.needs_resync:
            streams = zip(self.config.nodes, self.receiver.streams, strict=True)
            lost = [n.name for n, st in streams if st.resync]
            text = f"{', '.join(lost)} lost lock at t = {self.data_s:.2f} s: re-synchronised"
            self._say(text)
            self._messages.append(text)
            self.receiver.synchronise(record.samples, self.data_s)
            self.monitor.reset_streams()
        result = self.receiver.process(record.samples)
        self.monitor.update(result)
        self.data_s += self.record_s
        if self.observer is not None:
            self.observer(record, result)
        if self.data_s + 1e-9 < self._next_update_s:
            return None
        self._next_update_s += self.config.update_s
        status = self.monitor.status(overloads=self.overloads, messages=tuple(self._messages))
        self._messages.clear()
        self.updates += 1
        return status

    @property
    def data_time_s(self) -> float:
        """Data analysed so far [s] (the calibration records excluded)."""
        return self.data_s

    def calibrate(self) -> None:
        """Calibrate the receiver on the calibration records pushed so far (the live job
        calls it once they are taken; otherwise the first data record does). Idempotent."""
        if self._calibrated:
            return
        if not self._electronic or not self._shot:
            raise FeedError(
                f"calibration needs electronic and shot records; got {len(self._electronic)} "
                f"electronic, {len(self._shot)} shot (record {self.records - 1})"
            )
        calibration = self.receiver.calibrate(self._electronic, self._shot)
        self._electronic, self._shot = [], []
        self._calibrated = True
        for node, cal in zip(self.config.nodes, calibration, strict=True):
            self._say(f"{node.name}: v_el = {cal.v_el_snu:.4f} SNU")

    def _start(self, record: Record) -> None:
        """Calibrate (if not yet), lock every band on the first data record."""
        self.calibrate()
        syncs = self.receiver.synchronise(record.samples, 0.0)
        for node, s in zip(self.config.nodes, syncs, strict=True):
            self._say(
                f"{node.name}: locked, delay {s.delay_samples:.3f} samples, frame at symbol "
                f"{s.frame_offset}, peak/sidelobe {s.peak_to_sidelobe:.1f}"
            )
        self._streaming = True
