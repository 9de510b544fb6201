"""docs/configuration.md, generated: every key with its type (from the config types), default (from
`BridgeConfig()`), environment variable and meaning (the comment on its line in the example file), so the
reference cannot drift from the code (`tests/test_config.py` compares them)."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import msgspec

from . import BridgeConfig
from .sources import env_name

HEADER = """# Configuration

Generated from the code (`semookii-bridge schema config > docs/configuration.md`); a test keeps it equal.
Precedence: defaults < the TOML file (`--config`) < `SEMOOKII_BRIDGE_<SECTION>_<KEY>` environment
variables < flags of `run`. An unknown variable, key or section is an error (with a "did you mean"), and
an error names where the bad value came from. A list from the environment is a JSON array (`["1","2"]`) or
comma-separated values (`1,2`). The API token is never a key: `SEMOOKII_TOKEN`, or `api.token_file`.
`semookii-bridge config check --config FILE` prints the effective values; `--connect` also tries the broker
and the API. The annotated example with every default is `semookii-bridge.example.toml`.
"""


def meanings(example: str) -> dict[str, str]:
    """`section.key` -> the comment on its line of the example file (continuation comment lines joined)."""
    out: dict[str, str] = {}
    section, last = "", ""
    for raw in example.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif line.startswith("#") and raw.startswith(" ") and last:
            out[last] = f"{out[last]} {line.lstrip('# ')}".strip()
        elif "=" in line and section:
            key, _, rest = line.partition("=")
            last = f"{section}.{key.strip()}"
            out[last] = rest.partition("#")[2].strip() if "#" in rest else ""
    return out


def type_text(tp: Any) -> str:
    """A field's type in a reader's words: `integer 1 to 65535`, `one of: 5, 3`, `list of strings`, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _constrained(type_text(args[0]), [m for m in args[1:] if isinstance(m, msgspec.Meta)])
    if origin is list:
        return "list of strings"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _constrained(base: str, metas: list[msgspec.Meta]) -> str:
    parts = []
    for meta in metas:
        if meta.description:
            return f"{base}: {meta.description}"
        bounds = [
            f">= {_num(meta.ge)}" if meta.ge is not None else "",
            f"> {_num(meta.gt)}" if meta.gt is not None else "",
            f"<= {_num(meta.le)}" if meta.le is not None else "",
        ]
        parts += [b for b in bounds if b]
        if meta.min_length:
            parts.append(f"{meta.min_length} to {meta.max_length} characters")
    return f"{base} {', '.join(parts)}" if parts else base


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _default(value: Any) -> str:
    text = msgspec.json.encode(value).decode() if not isinstance(value, str) else f'"{value}"'
    return f"`{text}`"


def markdown(example: str) -> str:
    """The whole page."""
    meaning = meanings(example)
    defaults = BridgeConfig()
    lines = [HEADER]
    for section in msgspec.structs.fields(BridgeConfig):
        struct = section.type
        lines += [
            f"## [{section.name}]",
            "",
            (struct.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
            "",
            "| key | type | default | environment variable | meaning |",
            "|---|---|---|---|---|",
        ]
        values = getattr(defaults, section.name)
        for field in msgspec.structs.fields(struct):
            doc = meaning.get(f"{section.name}.{field.name}", "").replace("|", "\\|")
            lines.append(
                f"| `{field.name}` | {type_text(field.type)} | {_default(getattr(values, field.name))} | "
                f"`{env_name(section.name, field.name)}` | {doc} |"
            )
        lines.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"
