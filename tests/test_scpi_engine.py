"""The simulators' SCPI engine: headers, arguments, numbers, errors, framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.sim.scpi import (
    LENGTH_UNITS,
    MessageFramer,
    ScpiEngine,
    ScpiError,
    compile_header,
    ieee_block,
    parse_number,
    split_args,
    split_commands,
)


@pytest.mark.parametrize(
    ("pattern", "header", "suffixes"),
    [
        ("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "SOUR1:VOLT", ("1",)),
        ("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", ":SOURCE2:VOLTAGE:LEVEL", ("2",)),
        ("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "SOUR:VOLT:IMM:AMPL", ("",)),
        ("SYSTem:ERRor[:NEXT]", "SYST:ERR", ()),
        ("*IDN", "*IDN", ()),
    ],
)
def test_header_patterns_match_short_and_long_forms(pattern, header, suffixes):
    match = compile_header(pattern).match(header)
    assert match is not None
    assert match.groups() == suffixes


@pytest.mark.parametrize("header", ["SOURC1:VOLT", "SOUR1:VOL", "SOUR1:VOLTAGEX", "VOLT"])
def test_header_patterns_refuse_partial_forms(header):
    assert compile_header("SOURce#:VOLTage").match(header) is None


VOLTS = {"V": 1.0, "MV": 1e-3}


def make_engine():
    engine = ScpiEngine("ACME,MODEL,1,0.1")
    state = {"volt": {1: 0.0, 2: 0.0}}
    engine.add_value(
        "SOURce#:VOLTage",
        lambda s: state["volt"][s[0]],
        lambda arg, s: state["volt"].__setitem__(
            s[0], parse_number(arg, units={"V": 1, "MV": 1e-3})
        ),
    )
    engine.add("DATA", on_set=lambda a, s: state.__setitem__("data", a))
    return engine, state


def test_engine_queries_multiple_commands_and_path_rules():
    engine, state = make_engine()
    replies = engine.execute(b"sour2:volt 250mV;:SOUR1:VOLT 1.5;*IDN?;:SOUR2:VOLT?")
    assert state["volt"] == {1: 1.5, 2: 0.25}
    assert replies == ["ACME,MODEL,1,0.1", "+2.50000000E-01"]
    assert engine.pop_error() == '+0,"No error"'


def test_engine_error_queue_and_status():
    engine, _ = make_engine()
    engine.execute(b"FOO:BAR 1")
    engine.execute(b"SOUR1:VOLT 3 parsecs")
    assert engine.execute(b"*STB?") == ["36"]
    assert engine.execute(b"SYST:ERR?") == ['-113,"Undefined header;FOO:BAR"']
    assert engine.execute(b"SYST:ERR:NEXT?")[0].startswith("-131,")
    assert engine.execute(b"SYST:ERR?") == ['+0,"No error"']
    engine.execute(b"FOO")
    engine.execute(b"*CLS")
    assert engine.execute(b"SYST:ERR:COUN?") == ["0"]


def test_engine_block_argument_with_newlines():
    engine, state = make_engine()
    payload = bytes(range(256)) * 3
    engine.execute(b"DATA name," + ieee_block(payload))
    assert state["data"] == ["name", payload]


def test_parse_number_units_and_keywords():
    assert parse_number("1550nm", units=LENGTH_UNITS) == pytest.approx(1550e-9)
    assert parse_number("1.55E-6", units=LENGTH_UNITS) == pytest.approx(1.55e-6)
    assert parse_number("1550", units={**LENGTH_UNITS, "": 1e-9}) == pytest.approx(1550e-9)
    assert parse_number("MAX", maximum=5.0) == 5.0
    with pytest.raises(ScpiError) as info:
        parse_number("12 furlongs", units=LENGTH_UNITS)
    assert info.value.code == -131


def test_split_args_and_commands_respect_quotes_and_blocks():
    block = ieee_block(b"a;b,\nc")
    assert split_commands(b'A "x;y";B ' + block + b";C") == [b'A "x;y"', b"B " + block, b"C"]
    assert split_args(b'"a,b", 2,' + block) == ['"a,b"', "2", b"a;b,\nc"]


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b"DATA " + ieee_block(b)),
            st.text(alphabet="ABCDEFGH:;?* 0123456789,.", max_size=30).map(str.encode),
        ),
        max_size=8,
    ),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=10),
)
def test_framer_recovers_messages_for_any_chunking(messages, cut_sizes):
    """However the byte stream is chunked, the framer returns the same messages."""
    stream = b"".join(m + b"\n" for m in messages)
    framer = MessageFramer()
    out: list[bytes] = []
    pos, k = 0, 0
    while pos < len(stream):
        size = cut_sizes[k % len(cut_sizes)]
        out += framer.feed(stream[pos : pos + size])
        pos += size
        k += 1
    assert out == messages
