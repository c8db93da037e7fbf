"""Live table of ``labctl loops``: one row per loop, one per interlock rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from labctl.bench_control import LoopRow
from labctl.interlocks import RuleStatus
from labctl.isaqn_display import LiveDisplay
from labctl.loops_job import LoopsStatus

HEADERS = ("loop", "state", "setpoint", "measured", "error", "output", "ticks", "missed", "stale")
_STYLES = {"running": "green", "manual": "yellow", "fault": "bold red", "stopped": ""}


def _num(value: float, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _spec(row: LoopRow) -> str:
    return {"temperature": ".4f", "laser_lock": ".2f", "phase_lock": ".3f"}.get(row.kind, ".4g")


def loop_cells(row: LoopRow) -> list[str]:
    s, spec = row.status, _spec(row)
    unit_in, unit_out = row.units
    return [
        row.name,
        s.state,
        f"{_num(s.effective_setpoint, spec)} {unit_in}",
        f"{_num(s.measurement, spec)} {unit_in}",
        f"{_num(s.error, '+.2e')}",
        f"{_num(s.output, '.4g')} {unit_out}",
        str(s.ticks),
        str(s.missed_ticks),
        str(s.stale_readings),
    ]


def control_lines(rows: Sequence[LoopRow], interlocks: Mapping[str, RuleStatus]) -> list[str]:
    """Plain text: one line per loop (with its fault), one per interlock rule."""
    lines = []
    for row in rows:
        line = "  ".join(loop_cells(row))
        if row.status.state == "fault":
            line += f"  FAULT: {row.status.fault_reason}"
        lines.append(line)
    for name, rule in interlocks.items():
        lines.append(f"interlock {name}: {rule.state}  {rule.reason}")
    return lines


def control_renderables(
    rows: Sequence[LoopRow], interlocks: Mapping[str, RuleStatus]
) -> list[RenderableType]:
    """Rich: the loops' table, their faults, the interlock rules."""
    parts: list[RenderableType] = []
    if rows:
        table = Table(show_edge=False, pad_edge=False)
        for h in HEADERS:
            table.add_column(h, justify="left" if h in ("loop", "state") else "right")
        for row in rows:
            cells = loop_cells(row)
            table.add_row(cells[0], Text(cells[1], _STYLES.get(row.status.state, "")), *cells[2:])
        parts.append(table)
    for row in rows:
        if row.status.state == "fault":
            parts.append(Text(f"{row.name}: {row.status.fault_reason}", "red"))
    for name, rule in interlocks.items():
        style = "bold red" if rule.state == "tripped" else ""
        parts.append(Text(f"interlock {name}: {rule.state}  {rule.reason}", style))
    return parts


def format_status_lines(status: LoopsStatus) -> list[str]:
    lines = [f"t = {status.time_s:8.1f} s", *control_lines(status.loops, status.interlocks)]
    lines += [f"! {m}" for m in status.messages]
    return lines


def status_renderable(status: LoopsStatus) -> RenderableType:
    parts: list[RenderableType] = [Text(f"Feedback loops  t = {status.time_s:.1f} s", "bold")]
    parts += control_renderables(status.loops, status.interlocks)
    parts += [Text(f"! {m}", "yellow") for m in status.messages]
    return Group(*parts)


class LoopsDisplay(LiveDisplay):
    """Status sink for :class:`LoopsStatus` (rich on a terminal, plain otherwise)."""

    waiting_text = "feedback loops: engaging"

    def _lines(self, status: Any) -> list[str]:
        return format_status_lines(status)

    def _renderable(self, status: Any) -> RenderableType:
        return status_renderable(status)
