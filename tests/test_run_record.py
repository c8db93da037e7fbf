"""The run recorders' common parts: dataclass rows, differences, overruns said loudly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labctl.config import CONFIG_DIR, load_bench
from labctl.entangle_status import PairStatus
from labctl.h5read import open_recording
from labctl.h5record import FormatId, Table
from labctl.isaqn_status import NodeStatus
from labctl.loop_runner import LoopStatus
from labctl.record_fields import differences, from_row, row_dtype, to_row
from labctl.run_record import RunRecorder

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _same(a: object, b: object) -> bool:
    """Dataclass equality with nan == nan."""
    for name in a.__dataclass_fields__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif isinstance(x, tuple):
            if not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
                return False
        elif x != y:
            return False
    return True


@settings(max_examples=60, deadline=None)
@given(
    st.builds(
        NodeStatus,
        name=st.just("n"),
        locked=st.booleans(),
        transmittance_ci=st.tuples(floats, floats),
        xi_ci_snu=st.tuples(floats, floats),
        n_symbols=st.integers(-(2**62), 2**62),
        **{
            f: floats
            for f in NodeStatus.__dataclass_fields__
            if f not in ("name", "locked", "transmittance_ci", "xi_ci_snu", "n_symbols")
            and NodeStatus.__dataclass_fields__[f].type == "float"
        },
    )
)
def test_node_status_round_trips_through_a_row(node: NodeStatus) -> None:
    dtype = row_dtype(NodeStatus, exclude=("name",))
    row = np.array([to_row(node, dtype, exclude=("name",))], dtype)[0]
    assert _same(from_row(NodeStatus, row, exclude=("name",), name="n"), node)


@settings(max_examples=40, deadline=None)
@given(
    state=st.sampled_from(["running", "manual", "fault", "stopped"]),
    fault=st.one_of(st.none(), st.text(max_size=20)),
    fault_time=st.one_of(st.none(), st.floats(0, 1e6)),
    value=floats,
)
def test_optional_and_literal_fields_round_trip(
    state: str, fault: str | None, fault_time: float | None, value: float
) -> None:
    s = LoopStatus("x", state, value, value, value, value, value, 0.0, 0.0, 0.0, False,
                   3, 0, 0, 0, 0, fault, fault_time, value)  # fmt: skip
    dtype = row_dtype(LoopStatus, exclude=("name",))
    back = from_row(LoopStatus, np.array([to_row(s, dtype, ("name",))], dtype)[0], ("name",),
                    name="x")  # fmt: skip
    if fault == "":
        fault = None  # "" is how None is stored
    assert back.state == state and back.fault_reason == fault
    assert back.fault_time_s == fault_time
    assert _same(back, dataclasses.replace(s, fault_reason=fault))


def test_unmapped_field_types_are_refused() -> None:
    @dataclasses.dataclass
    class Odd:
        items: list[float]

    with pytest.raises(TypeError, match=r"Odd.items: type .* has no HDF5 column mapping"):
        row_dtype(Odd)
    assert "user_a" not in (row_dtype(PairStatus, exclude=("user_a",)).names or ())


def test_differences_name_the_path_and_treat_none_as_equal() -> None:
    a = {"t": 1.0, "pairs": [{"v": 0.97, "name": "ab"}], "x": None}
    assert differences(a, {"t": 1.0 + 1e-13, "pairs": [{"v": 0.97, "name": "ab"}], "x": None}) == []
    diff = differences(a, {"t": 1.0, "pairs": [{"v": 0.96, "name": "ab"}], "x": None})
    assert diff == ["pairs[0].v: 0.97 vs 0.96"]
    assert differences({"p": [1, 2]}, {"p": [1]}) == ["p: 2 items vs 1"]


def test_overrun_is_counted_reported_and_logged_in_the_file(tmp_path: Path) -> None:
    """A queue too small for the data: rows refused loudly (callback, count, gap events), the
    run goes on, every accepted row is in the file."""
    config = load_bench(CONFIG_DIR / "sim_bench.toml")
    path = tmp_path / "run.h5"
    alarms: list[Exception] = []
    table = Table("raw/x", np.float64, row_shape=(1024,), chunk_rows=1)
    rec = RunRecorder(
        path,
        config,
        FormatId("test", (1, 0)),
        [table],
        on_error=alarms.append,
        queue_max_bytes=64 * 1024,
    )
    rows = np.arange(400 * 1024, dtype=np.float64).reshape(400, 1024)
    for k in range(400):
        rec.append("raw/x", rows[k : k + 1])
    rec.close()
    assert rec.overrun_rows > 0 and alarms
    assert "NOT recorded" in str(alarms[0])
    with open_recording(path) as r:
        kept = r.table("raw/x")
        assert kept.shape[0] + sum(g.rows_lost for g in r.gaps("raw/x")) == 400
        assert rec.overrun_rows == sum(g.rows_lost for g in r.gaps("raw/x"))
        # the accepted rows are intact and in order
        firsts = kept[:, 0] / 1024
        assert np.all(np.diff(firsts) > 0) and np.all(firsts == np.round(firsts))
