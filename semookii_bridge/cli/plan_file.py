"""A dispatch plan from a file, for `send --plan`: a JSON file holding the plan message, or a CSV file with a
header row: `start`, `end`, then the command's fields (`type` defaults to `power_control`), one interval a row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click


def read_plan(path: Path, plan_id: str | None) -> dict[str, Any]:
    """The plan message in `path`; `plan_id` (else the JSON's own, else the file's name) names it."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        plan: dict[str, Any] = {"intervals": [_interval(row, n) for n, row in enumerate(rows, 2)]}
    else:
        try:
            plan = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"{path}: not JSON ({exc})") from None
        if not isinstance(plan, dict):
            raise click.UsageError(f"{path}: a plan is a JSON object with plan_id and intervals")
    plan["plan_id"] = plan_id or plan.get("plan_id") or path.stem
    return plan


def _interval(row: dict[str, str | None], line: int) -> dict[str, Any]:
    """One CSV row as an interval; a row without start or end is bad usage, naming its line."""
    start, end = (row.pop("start", None) or "").strip(), (row.pop("end", None) or "").strip()
    if not start or not end:
        raise click.UsageError(f"line {line}: every row needs `start` and `end`")
    command = {key: _value(value) for key, value in row.items() if key and value not in (None, "")}
    command.setdefault("type", "power_control")
    return {"start": start, "end": end, "command": command}


def _value(text: str | None) -> Any:
    """A cell as JSON would read it: an integer, a number, true or false, else the text."""
    cell = (text or "").strip()
    for convert in (int, float):
        try:
            return convert(cell)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(cell.lower(), cell)
