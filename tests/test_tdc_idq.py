"""ID Quantique ID1000 driver against its simulator: SCPI control and the time-tag stream."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentTimeout,
    LimitViolation,
    ProtocolError,
)
from drivers.sim.host import SimSpec
from drivers.sim.idq_id1000 import PoissonPairSource
from drivers.tdc import TagBatch

SINGLES_HZ = {1: 100e3, 2: 80e3, 3: 60e3, 4: 120e3}
PAIR_RATE_HZ = 20e3
PAIR_DELAY_PS = 2500
OPTIONS = {
    # string keys, as a TOML bench file gives them
    "singles_hz": {str(ch): rate for ch, rate in SINGLES_HZ.items()},
    "pairs": [
        {"channels": [1, 2], "rate_hz": PAIR_RATE_HZ, "delay_ps": PAIR_DELAY_PS, "jitter_ps": 40}
    ],
    "bin_width_ps": 4,
}


def expected_rate_hz(channel: int) -> float:
    return SINGLES_HZ[channel] + (PAIR_RATE_HZ if channel in (1, 2) else 0.0)


def within_poisson(observed: int, expected: float, sigmas: float = 5.0) -> bool:
    return abs(observed - expected) <= sigmas * np.sqrt(expected)


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("tdc1", "idq_id1000", OPTIONS)], clock=manual_clock)


@pytest.fixture
def sim(bench):
    return bench.sims["tdc1"]


@pytest.fixture
def tagger(bench, connect):
    return connect(bench, "tdc1")


def now_ps(clock) -> int:
    return round(clock.now_s() * 1e12)


def advance_and_read(tagger, sim, clock, dt_s: float) -> TagBatch:
    """Advance virtual time and read every tag that is final by then."""
    clock.advance(dt_s)
    return tagger.read_tags(5.0, until_ps=now_ps(clock) - sim.holdback_ps)


def test_control_round_trips(sim, tagger):
    assert tagger.identity.startswith("ID Quantique,ID1000")
    tagger.threshold_v[2] = 0.25
    tagger.delay_ps[3] = 1500
    tagger.enabled[4] = False
    tagger.counter_window_ms[1] = 250
    sent = list(sim.received)
    for command in (b"INPU2:THRE 0.2500V", b"DELA3:VALU 1500", b"INPU4:ENAB OFF"):
        assert command in sent
        assert sent[sent.index(command) + 1] == b"SYST:ERR?"
    assert (sim.threshold_v[2], sim.delay_ps[3], sim.enabled[4]) == (0.25, 1500, False)
    assert sim.integration_ms[1] == 250
    assert tagger.query("DELA3:VALU?") == "1500TB"  # the TB suffix on the wire...
    assert tagger.delay_ps[3] == 1500  # ...stripped by the driver
    assert tagger.threshold_v[2] == 0.25
    assert tagger.enabled[4] is False and tagger.enabled[1] is True
    assert tagger.counter_window_ms[1] == 250
    assert tagger.bin_width_ps == 4
    assert tagger.streaming is False
    assert int(tagger.query("DEVI:DATA:PORT?")) == sim.data_port


def test_out_of_range_values_are_refused_before_sending(sim, tagger):
    before = list(sim.received)
    with pytest.raises(LimitViolation, match=r"threshold_v=2\.5 refused"):
        tagger.threshold_v[1] = 2.5
    with pytest.raises(LimitViolation, match="delay_ps"):
        tagger.delay_ps[1] = -10
    with pytest.raises(LimitViolation, match="an integer"):
        tagger.delay_ps[1] = 10.5
    with pytest.raises(LimitViolation, match="channels"):
        tagger.threshold_v[5] = 0.1
    assert list(sim.received) == before


def test_scpi_err_replies_and_the_error_queue(sim, tagger):
    with pytest.raises(InstrumentCommandError, match="SCPI_ERR_HEADER_SUFFIX") as info:
        tagger.query("INPU9:COUN?")
    assert info.value.code == -114
    with pytest.raises(InstrumentCommandError, match="Undefined header") as info:
        tagger.write("INPU1:BOGUS 1")
    assert info.value.code == -113
    assert tagger.read_errors() == []
    assert tagger.bin_width_ps == 4  # the link is still in step


def test_counters_follow_rates_threshold_and_enable(sim, tagger, manual_clock):
    for ch in tagger.channels:
        tagger.counter_window_ms[ch] = 100
    tagger.threshold_v[3] = 1.5  # above the 1 V detector pulses: never fires
    tagger.enabled[4] = False
    manual_clock.advance(0.25)  # windows [0, 0.1) and [0.1, 0.2) are complete
    for ch in (1, 2):
        assert within_poisson(tagger.counts[ch], expected_rate_hz(ch) * 0.1)
    assert tagger.counts[3] == 0 and tagger.counts[4] == 0
    rate = tagger.count_rate_hz(1)
    assert abs(rate - expected_rate_hz(1)) <= 5 * np.sqrt(expected_rate_hz(1) * 0.1) / 0.1


def test_streaming_batches_rates_order_delays_and_pair_peak(sim, tagger, manual_clock):
    tagger.delay_ps[2] = 5000
    start_ps = now_ps(manual_clock)
    tagger.start_stream()
    assert sim.streaming and tagger.is_streaming
    batches = [advance_and_read(tagger, sim, manual_clock, 0.05) for _ in range(4)]
    for earlier, later in itertools.pairwise(batches):
        assert later.timestamp_ps[0] >= earlier.timestamp_ps[-1]  # state carried over
        assert later.horizon_ps > earlier.horizon_ps
    tags = TagBatch.concatenate(batches)
    assert tags.channel.dtype == np.uint8 and tags.timestamp_ps.dtype == np.int64
    assert np.all(np.diff(tags.timestamp_ps) >= 0)
    assert tags.timestamp_ps[0] >= start_ps and tags.timestamp_ps[-1] < tags.horizon_ps
    assert np.all(tags.timestamp_ps % 4 == 0)  # 4 ps bins
    assert tags.lost_events == 0 and not tags.overflow
    span_s = (tags.horizon_ps - start_ps) * 1e-12
    for ch, n in tags.counts(tagger.channels).items():
        assert within_poisson(n, expected_rate_hz(ch) * span_s), (ch, n)

    # the pair peak sits at the pair delay plus the input delay of channel 2
    t1, t2 = tags.times_ps(1), tags.times_ps(2)
    peak_ps = PAIR_DELAY_PS + 5000
    lo = np.searchsorted(t2, t1 + peak_ps - 500)
    hi = np.searchsorted(t2, t1 + peak_ps + 500)
    matched = hi > lo
    offsets = t2[lo[matched]] - t1[matched]
    expected_pairs = PAIR_RATE_HZ * span_s
    assert within_poisson(int(matched.sum()), expected_pairs)
    assert abs(np.median(offsets) - peak_ps) <= 8
    assert 30 <= np.std(offsets) <= 60  # 40 ps pair jitter, plus tagger jitter and bins
    # a window of the same width away from the peak holds accidentals only
    off_lo = np.searchsorted(t2, t1 + peak_ps + 50_000 - 500)
    off_hi = np.searchsorted(t2, t1 + peak_ps + 50_000 + 500)
    assert int(np.count_nonzero(off_hi > off_lo)) < 0.01 * expected_pairs


def test_counter_wraparound_is_unwrapped_across_batches(sim_bench, manual_clock, connect):
    options = {**OPTIONS, "counter_bits": 16, "bin_width_ps": 8, "keep_truth": True}
    host = sim_bench([SimSpec("tdc1", "idq_id1000", options)], clock=manual_clock)
    sim = host.sims["tdc1"]
    tagger = connect(host, "tdc1")
    manual_clock.advance(1.234)  # the stream starts at ~2354 wraps since the time origin
    tagger.start_stream()
    batches = [advance_and_read(tagger, sim, manual_clock, dt) for dt in (0.01, 0.02, 0.003, 0.01)]
    tags = TagBatch.concatenate(batches)
    wrap_ps = 2**16 * 8  # 524 us
    assert tags.timestamp_ps[0] > 2000 * wrap_ps
    assert (tags.timestamp_ps[-1] - tags.timestamp_ps[0]) > 50 * wrap_ps
    assert np.all(np.diff(tags.timestamp_ps) >= 0)
    truth_bins = np.concatenate([bins for _, bins in sim.truth])
    truth_channels = np.concatenate([ch for ch, _ in sim.truth])
    np.testing.assert_array_equal(tags.timestamp_ps, truth_bins * 8)
    np.testing.assert_array_equal(tags.channel, truth_channels)


class ScriptedSource:
    """A pluggable source: a fixed list of (input, time) detections."""

    def __init__(self, events: list[tuple[int, int]]) -> None:
        self.events = events

    def generate(self, t0_ps: int, t1_ps: int, rng: np.random.Generator):
        picked = [(ch, t) for ch, t in self.events if t0_ps <= t < t1_ps]
        return (
            np.array([ch for ch, _ in picked], dtype=np.uint8),
            np.array([t for _, t in picked], dtype=np.int64),
        )


def test_pluggable_event_source_with_exact_delays_bins_and_long_gaps(
    sim_bench, manual_clock, connect
):
    options = {"counter_bits": 20, "bin_width_ps": 5, "tagger_jitter_ps": 0}
    host = sim_bench([SimSpec("tdc1", "idq_id1000", options)], clock=manual_clock)
    sim = host.sims["tdc1"]
    events = [
        (1, 10_003),
        (3, 20_000),
        (4, 30_000),  # input 4 disabled below: never tagged
        (3, 5_000_000_123),  # 5 ms: ~950 wraps of the 5.24 us counter later
        (1, 5_000_000_124),
        (2, 60_000_000_000),  # 60 ms: ~10500 more wraps with no event between
    ]
    sim.event_source = ScriptedSource(events)
    tagger = connect(host, "tdc1")
    tagger.delay_ps[3] = 1000
    tagger.enabled[4] = False
    tagger.start_stream()
    batches = [advance_and_read(tagger, sim, manual_clock, dt) for dt in (0.001, 0.01, 0.1)]
    tags = TagBatch.concatenate(batches)
    assert tags.channel.tolist() == [1, 3, 1, 3, 2]
    assert tags.timestamp_ps.tolist() == [
        10_000,  # floored to 5 ps bins
        21_000,  # + 1000 ps input delay
        5_000_000_120,
        5_000_001_120,
        60_000_000_000,
    ]
    assert [len(b) for b in batches] == [2, 2, 1]


def test_overflow_reports_lost_events(sim_bench, manual_clock, connect):
    host = sim_bench(
        [SimSpec("tdc1", "idq_id1000", {**OPTIONS, "buffer_s": 0.1})], clock=manual_clock
    )
    sim = host.sims["tdc1"]
    tagger = connect(host, "tdc1")
    tagger.start_stream()
    tags = advance_and_read(tagger, sim, manual_clock, 0.5)  # 0.5 s > the 0.1 s buffer
    assert tags.overflow
    assert tags.timestamp_ps[0] >= 0.4e12  # only the buffer's last 0.1 s survived
    # the skipped 0.4 s is estimated from the rate of the kept 0.1 s
    assert tags.lost_events == pytest.approx(4 * len(tags), rel=0.01)
    assert tagger.lost_events == tags.lost_events
    tagger.write("RAW:ERR:CLE")
    assert tagger.lost_events == 0
    after = advance_and_read(tagger, sim, manual_clock, 0.05)
    assert not after.overflow and after.lost_events == 0


def test_stop_stream_and_safe_state(sim, tagger, manual_clock):
    tagger.start_stream()
    assert len(advance_and_read(tagger, sim, manual_clock, 0.01)) > 0
    tagger.stop_stream()
    assert not sim.streaming and not tagger.is_streaming
    with pytest.raises(InstrumentDisconnected, match="start_stream"):
        tagger.read_tags(0.1)
    tagger.start_stream()
    assert len(advance_and_read(tagger, sim, manual_clock, 0.01)) > 0
    sim.received.clear()
    tagger.safe_state()
    assert list(sim.received)[:1] == [b"RAW:SEND OFF"]
    assert not sim.streaming and not tagger.is_streaming
    assert tagger.streaming is False


def test_read_tags_waits_and_keeps_what_it_read(sim, tagger, manual_clock):
    tagger.start_stream()
    assert len(tagger.read_tags(0.05)) == 0  # the clock stands still: nothing comes
    target_ps = now_ps(manual_clock) + 10**9
    with pytest.raises(InstrumentTimeout, match="not complete"):
        tagger.read_tags(0.1, until_ps=target_ps)
    manual_clock.advance(0.002)
    first = tagger.read_tags(5.0, until_ps=target_ps)
    assert first.horizon_ps >= target_ps
    assert within_poisson(len(first), sum(map(expected_rate_hz, SINGLES_HZ)) * 0.002)


def test_data_port_disconnect_raises_and_the_stream_restarts(sim, tagger, manual_clock):
    tagger.start_stream()
    advance_and_read(tagger, sim, manual_clock, 0.01)
    sim.drop_data_connections()
    with pytest.raises(InstrumentDisconnected, match="data connection"):
        tagger.read_tags(2.0)
    assert not tagger.is_streaming
    assert tagger.bin_width_ps == 4  # control is unaffected
    tagger.start_stream()
    assert len(advance_and_read(tagger, sim, manual_clock, 0.01)) > 0


def test_corrupt_frame_is_a_protocol_error(sim, tagger, manual_clock):
    tagger.start_stream()
    sim.corrupt_next_frame()
    manual_clock.advance(0.01)
    with pytest.raises(ProtocolError, match="bad frame magic"):
        tagger.read_tags(5.0, until_ps=now_ps(manual_clock) - sim.holdback_ps)
    assert not tagger.is_streaming  # a binary stream is restarted, not resynchronised


def test_default_source_contract():
    source = PoissonPairSource({1: 1e6}, [])
    rng = np.random.default_rng(1)
    channels, times = source.generate(5_000, 1_000_005_000, rng)
    assert channels.dtype == np.uint8 and times.dtype == np.int64
    assert times.min() >= 5_000 and times.max() < 1_000_005_000
    assert within_poisson(times.size, 1e6 * 1e-3)
