"""Live display of the ISAQN job's statuses: a status sink (``display(status)``).

On a terminal, :class:`LiveDisplay` redraws a ``rich`` table in place (one row per node) with
a header line (stream time, records, overloads), the latest event location (kept until the
next one) and the status messages. Elsewhere (pipes, CI logs) it prints plain text without
escape codes, one block per update: a header line, one compact line per node, the location
line when there is one (:func:`format_status_lines`).

Units: powers and excess noise in shot-noise units (SNU; xi shown in mSNU), castdown in dB,
phases in rad, key rate in bit/symbol and SKR in kbit/s. ``nan`` (not available yet) is
shown as ``-``.

Rendering is a few table cells per node: it does not hold up the acquisition loop. The rich
mode does not auto-refresh (no background thread): it redraws on each status. Call
:meth:`LiveDisplay.stop` (or use ``with``) so the terminal is restored on Ctrl-C.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus

NAN_TEXT = "-"


def _num(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``; nan as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NAN_TEXT
    return format(value, spec)


def _with_ci(value: float, ci: tuple[float, float], spec: str, scale: float = 1.0) -> str:
    """``value [lo, hi]`` (times ``scale``); the interval left out while it is all nan."""
    lo, hi = ci
    text = _num(value * scale, spec)
    if math.isnan(lo) and math.isnan(hi):
        return text
    return f"{text} [{_num(lo * scale, spec)}, {_num(hi * scale, spec)}]"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _vibration(node: NodeStatus) -> str:
    if not node.vibrating:
        return "no"
    return f"yes {_num(node.vibration_freq_hz, '.1f')} Hz"


def _phase(node: NodeStatus) -> str:
    return f"{_num(node.phase_rms_rad, '.3f')} / {_num(node.phase_peak_to_peak_rad, '.3f')}"


def _transmittance(node: NodeStatus) -> str:
    return _with_ci(node.transmittance, node.transmittance_ci, ".4f")


def _xi_msnu(node: NodeStatus) -> str:
    return _with_ci(node.xi_snu, node.xi_ci_snu, ".2f", 1e3)


def _key_rate(node: NodeStatus) -> str:
    return _num(node.key_rate_bits_per_symbol, ".4f")


def _skr_kbps(node: NodeStatus) -> str:
    return _num(node.skr_bps / 1e3, ".2f")


def format_header_line(status: NetworkStatus) -> str:
    """``t = 12.30 s  records 123  overloads 0``."""
    return (
        f"t = {_num(status.t_s, '.2f')} s  records {status.records}  overloads {status.overloads}"
    )


def format_node_line(node: NodeStatus) -> str:
    """One compact plain-text line for one node (every table column, units inline)."""
    return (
        f"{node.name}: lock {_yes(node.locked)}"
        f" | band {_num(node.band_power_snu, '.3f')} SNU"
        f" | castdown {_num(node.castdown_db, '.1f')} dB"
        f" | vib {_vibration(node)}"
        f" | pilot-only {_yes(node.pilot_only)}"
        f" | phase rms/pp {_phase(node)} rad"
        f" | T {_transmittance(node)}"
        f" | xi {_xi_msnu(node)} mSNU"
        f" | key {_key_rate(node)} bit/symbol"
        f" | SKR {_skr_kbps(node)} kbit/s"
    )


def format_location_line(location: EventLocation, *, ascii_only: bool = True) -> str:
    """``location at t = 3.20 s: x = 12.3 +/- 0.5 m, y = ... (nodes a,b,c; rms residual ...)``.

    ``ascii_only`` writes ``+/-`` (safe on any pipe encoding) instead of ``±``."""
    pm = "+/-" if ascii_only else "±"
    text = (
        f"location at t = {_num(location.t_s, '.2f')} s: "
        f"x = {_num(location.x_m, '.1f')} {pm} {_num(location.sigma_x_m, '.1f')} m, "
        f"y = {_num(location.y_m, '.1f')} {pm} {_num(location.sigma_y_m, '.1f')} m "
        f"(nodes {','.join(location.nodes)}; "
        f"rms residual {_num(location.rms_residual_s * 1e6, '.2f')} us)"
    )
    if location.ambiguous:
        text += " AMBIGUOUS"
    return text


def format_status_lines(status: NetworkStatus) -> list[str]:
    """Plain-text lines of one status: header, one per node, location, messages."""
    lines = [format_header_line(status)]
    lines += [f"  {format_node_line(node)}" for node in status.nodes]
    if status.location is not None:
        lines.append(f"  {format_location_line(status.location)}")
    lines += [f"  ! {message}" for message in status.messages]
    return lines


def status_table(status: NetworkStatus) -> Table:
    """The rich table of one status: one row per node."""
    table = Table(expand=False, header_style="bold")
    # Text everywhere: "[dB]" or a node name in brackets must not be read as rich markup
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("node", "left"),
        ("lock", "left"),
        ("band power\n[SNU]", "right"),
        ("castdown\n[dB]", "right"),
        ("vibrating\n[Hz]", "left"),
        ("pilot-only", "left"),
        ("phase rms / p-p\n[rad]", "right"),
        ("T\n(CI)", "right"),
        ("xi [mSNU]\n(CI)", "right"),
        ("key rate\n[bit/symbol]", "right"),
        ("SKR\n[kbit/s]", "right"),
    )
    for header, justify in columns:
        table.add_column(Text(header), justify=justify)
    for node in status.nodes:
        key_style = "green" if node.key_rate_bits_per_symbol > 0 else None
        table.add_row(
            Text(node.name, "bold"),
            Text("yes", "green") if node.locked else Text("NO", "bold red"),
            Text(_num(node.band_power_snu, ".3f")),
            Text(_num(node.castdown_db, ".1f")),
            Text(_vibration(node), "yellow") if node.vibrating else Text("no"),
            Text("YES", "bold yellow") if node.pilot_only else Text("no"),
            Text(_phase(node)),
            Text(_transmittance(node)),
            Text(_xi_msnu(node)),
            Text(_key_rate(node), key_style or ""),
            Text(_skr_kbps(node), key_style or ""),
        )
    return table


def status_renderable(
    status: NetworkStatus, location: EventLocation | None = None
) -> RenderableType:
    """Header, table, location and messages as one rich renderable.

    ``location``: shown when ``status`` has none (the latest one seen, with its time)."""
    header = Text.assemble(
        ("ISAQN  ", "bold"),
        f"t = {_num(status.t_s, '.2f')} s   records {status.records}   overloads ",
        (str(status.overloads), "bold red" if status.overloads else "green"),
    )
    parts: list[RenderableType] = [header, status_table(status)]
    location = status.location if status.location is not None else location
    if location is not None:
        style = "bold yellow" if location.ambiguous else "bold"
        parts.append(Text(format_location_line(location, ascii_only=False), style))
    parts += [Text(f"! {message}", "yellow") for message in status.messages]
    return Group(*parts)


class LiveDisplay:
    """Status sink showing each :class:`NetworkStatus` (rich table on a terminal, plain text
    otherwise).

    ``console``: the rich console to draw on (its ``is_terminal`` chooses the mode); else one
    is made on ``file`` (default ``sys.stdout``). ``plain`` forces the mode (True: plain text,
    False: rich). Use as a context manager, or call :meth:`start` / :meth:`stop`; a status
    received before :meth:`start` starts the rich display.
    """

    def __init__(
        self,
        *,
        file: TextIO | None = None,
        console: Console | None = None,
        plain: bool | None = None,
    ) -> None:
        self.console = console if console is not None else Console(file=file or sys.stdout)
        self._file: TextIO = file if file is not None else self.console.file
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self._live: Live | None = None
        self.last: Any = None
        self.last_location: EventLocation | None = None

    def start(self) -> None:
        """Start the live (rich) display; nothing to do in plain mode. Idempotent."""
        if self.plain or self._live is not None:
            return
        renderable = (
            self._renderable(self.last) if self.last is not None else Text(self.waiting_text)
        )
        self._live = Live(
            renderable,
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def stop(self) -> None:
        """Stop the live display, leaving the last table on screen. Idempotent."""
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    close = stop

    def __enter__(self) -> LiveDisplay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    #: shown by the rich display until the first status
    waiting_text = "ISAQN: waiting"

    def _lines(self, status: Any) -> list[str]:
        """Plain-text lines of one status (subclasses: other jobs' statuses)."""
        return format_status_lines(status)

    def _renderable(self, status: Any) -> RenderableType:
        """Rich renderable of one status."""
        return status_renderable(status, self.last_location)

    def __call__(self, status: Any) -> None:
        """Show ``status`` (redraw the table, or print its plain-text lines)."""
        self.last = status
        if getattr(status, "location", None) is not None:
            self.last_location = status.location
        if self.plain:
            self._file.write("\n".join(self._lines(status)) + "\n")
            self._file.flush()
            return
        if self._live is None:
            self.start()
        else:
            self._live.update(self._renderable(status), refresh=True)


__all__ = [
    "LiveDisplay",
    "format_location_line",
    "format_node_line",
    "format_status_lines",
    "status_renderable",
    "status_table",
]
