"""The ISAQN live display: plain-text lines for pipes, a rich table on a terminal."""

from __future__ import annotations

import io
import math

from rich.console import Console

from labctl.isaqn_display import LiveDisplay, format_status_lines
from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus

NAN = math.nan


def node(name: str, **overrides: object) -> NodeStatus:
    values: dict[str, object] = dict(
        name=name,
        locked=True,
        band_power_snu=1.234,
        pilot_power_snu=40.0,
        castdown_db=0.5,
        vibrating=False,
        vibration_freq_hz=NAN,
        pilot_only=False,
        phase_rad=0.3,
        phase_rms_rad=0.0123,
        phase_peak_to_peak_rad=0.0456,
        phase_max_slope_rad_per_s=2.0,
        phase_floor_rad2_per_hz=1e-9,
        strain_resolution_per_rthz=1e-12,
        transmittance=0.5123,
        transmittance_ci=(0.5011, 0.5235),
        xi_snu=0.0123,
        xi_ci_snu=(0.0101, 0.0145),
        n_symbols=100_000,
        v_el_snu=0.05,
        key_rate_bits_per_symbol=0.0321,
        skr_bps=12_345.0,
    )
    values.update(overrides)
    return NodeStatus(**values)  # type: ignore[arg-type]


def status(location: EventLocation | None = None) -> NetworkStatus:
    return NetworkStatus(
        t_s=12.3,
        records=123,
        overloads=2,
        nodes=(
            node("alice"),
            node(
                "bob",
                locked=False,
                vibrating=True,
                vibration_freq_hz=87.25,
                pilot_only=True,
                transmittance=NAN,
                transmittance_ci=(NAN, NAN),
                xi_snu=NAN,
                xi_ci_snu=(NAN, NAN),
                key_rate_bits_per_symbol=NAN,
                skr_bps=NAN,
            ),
        ),
        location=location,
        messages=("bob: pilot only",),
    )


LOCATION = EventLocation(
    t_s=12.0,
    x_m=105.25,
    y_m=-20.5,
    sigma_x_m=1.5,
    sigma_y_m=NAN,
    rms_residual_s=2.5e-6,
    nodes=("alice", "bob", "carol"),
    arrival_s=(0.001, 0.002, 0.003),
    ambiguous=True,
)


def test_plain_lines_show_every_column() -> None:
    lines = format_status_lines(status())
    assert lines[0] == "t = 12.30 s  records 123  overloads 2"
    alice = next(line for line in lines if "alice" in line)
    for text in (
        "lock yes",
        "band 1.234 SNU",
        "castdown 0.5 dB",
        "vib no",
        "pilot-only no",
        "phase rms/pp 0.012 / 0.046 rad",
        "T 0.5123 [0.5011, 0.5235]",
        "xi 12.30 [10.10, 14.50] mSNU",
        "key 0.0321 bit/symbol",
        "SKR 12.35 kbit/s",
    ):
        assert text in alice, (text, alice)
    assert lines[-1] == "  ! bob: pilot only"
    assert len(lines) == 4  # header, two nodes, one message


def test_plain_lines_show_nan_as_dash() -> None:
    bob = next(line for line in format_status_lines(status()) if "bob" in line)
    for text in (
        "lock no",
        "vib yes 87.2 Hz",
        "pilot-only yes",
        "T - |",
        "xi - mSNU",
        "key - bit/symbol",
        "SKR - kbit/s",
    ):
        assert text in bob, (text, bob)
    assert "nan" not in bob


def test_plain_location_line() -> None:
    lines = format_status_lines(status(LOCATION))
    loc = next(line for line in lines if "location" in line)
    assert "x = 105.2 +/- 1.5 m" in loc
    assert "y = -20.5 +/- - m" in loc
    assert "nodes alice,bob,carol" in loc and "rms residual 2.50 us" in loc
    assert loc.endswith("AMBIGUOUS")


def test_live_display_plain_mode_writes_to_the_file() -> None:
    out = io.StringIO()
    display = LiveDisplay(file=out)  # a StringIO is not a terminal
    assert display.plain
    with display:
        display(status(LOCATION))
        display(status())
    text = out.getvalue()
    assert "\x1b[" not in text  # no ANSI escapes
    assert text.count("  alice: lock") == 2 and text.count("  bob: lock") == 2
    assert text.count("location at t") == 1
    assert text.splitlines() == format_status_lines(status(LOCATION)) + format_status_lines(
        status()
    )


def test_live_display_rich_mode_renders_the_table() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200, record=True)
    display = LiveDisplay(console=console)
    assert not display.plain
    with display:
        display(status())
        display(status(LOCATION))
        display(status())  # the latest location stays on screen
    display.stop()  # idempotent
    assert "\x1b[" in buf.getvalue()  # drawn for a terminal
    text = console.export_text()
    for fragment in ("alice", "bob", "records 123", "overloads 2", "12.35", "87.2 Hz", "[dB]"):
        assert fragment in text, fragment
    assert "105.2 ± 1.5 m" in text and "AMBIGUOUS" in text
    last_frame = text[text.rindex("ISAQN") :]
    assert "location at t = 12.00 s" in last_frame
    assert "bob: pilot only" in text
    assert "nan" not in text


def test_rich_display_starts_on_first_status() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    display = LiveDisplay(console=console)
    display(status())
    display.close()
    assert "alice" in console.export_text()
