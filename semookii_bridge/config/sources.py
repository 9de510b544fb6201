"""Where configuration values come from (file, `SEMOOKII_BRIDGE_*` environment, flags) and how a bad one is
explained: the source named (file and line, or the variable), enum values listed, "did you mean" for names.
Strict on purpose: a misspelled variable or a malformed allow-list is an error, never silently ignored."""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .secret import Secret

ENV_PREFIX = "SEMOOKII_BRIDGE_"
_AT = re.compile(r"at `\$\.(\w+)(?:\.(\w+))?")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_TOML_KEY = re.compile(r"\(((?:'[^']*',? ?)+)\)")
Fields = dict[str, dict[str, Any]]
"""Section -> key -> the field's type."""


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and where its value came from."""


def fields_of(root: type[msgspec.Struct]) -> Fields:
    """Every section's keys and their types."""
    return {f.name: {g.name: g.type for g in msgspec.structs.fields(f.type)} for f in msgspec.structs.fields(root)}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def from_environment(environ: Mapping[str, str], fields: Fields) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The overrides the environment makes, and for each `section.key` the variable that set it."""
    known = {env_name(s, k): (s, k) for s, keys in fields.items() for k in keys}
    out: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name in sorted(n for n in environ if n.upper().startswith(ENV_PREFIX)):
        if name not in known:
            raise ConfigError(f"unknown environment variable {name}{did_you_mean(name, list(known))}")
        section, key = known[name]
        value: Any = environ[name]
        if _is_list(fields[section][key]):
            value = env_list(name, value)
        elif _int_or_text(fields[section][key]) and value.strip().isdigit():
            value = int(value)  # "1" is the count 1, not a text that must look like "2%"
        out.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = f"environment variable {name}"
    return out, origin


def _int_or_text(tp: Any) -> bool:
    """Whether a field takes an int or a text (a union: which a string from the environment cannot tell)."""
    members = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in typing.get_args(tp)]
    return int in members and str in members


def _is_list(tp: Any) -> bool:
    origin: Any = typing.get_origin(tp)
    return origin is list


def env_list(name: str, text: str) -> list[str]:
    """A list from the environment: a JSON array of strings, or values separated by commas (no brackets or
    quotes); anything else is an error, since a wrong allow-list is a safety problem."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(f'{name}: not a valid JSON array ({exc.msg}); write ["1", "2"] or 1,2') from None
        if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f'{name}: a JSON array of strings is expected, e.g. ["1", "2"]')
        return [str(v) for v in value]
    if any(c in stripped for c in "[]\"'"):
        raise ConfigError(
            f'{name}: a list is a JSON array (["1", "2"]) or comma-separated values without '
            f"brackets or quotes (1,2); got {text!r}"
        )
    return [part.strip() for part in stripped.split(",") if part.strip()]


def did_you_mean(name: str, candidates: list[str]) -> str:
    """` (did you mean X?)`, or nothing when no candidate is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def toml_error(path: object, message: str) -> ConfigError:
    """A TOML syntax error in the file's own terms: `[mqtt]` rather than Python's `('mqtt',)`."""
    tidy = _TOML_KEY.sub(lambda m: "[" + ".".join(re.findall(r"'([^']*)'", m.group(1))) + "]", message)
    return ConfigError(f"{path}: {tidy}")


def explain(message: str, fields: Fields, origin: Mapping[str, str], path: object, text: str) -> str:
    """A validation message with what to write instead and where the bad value came from."""
    at, unknown = _AT.search(message), _UNKNOWN.search(message)
    section, key = (at.group(1), at.group(2)) if at else (None, None)
    hint = ""
    if unknown and section is None:  # an unknown section
        section, hint = unknown.group(1), did_you_mean(unknown.group(1), list(fields))
    elif unknown and section in fields:
        key, hint = unknown.group(1), did_you_mean(unknown.group(1), list(fields[section]))
    elif section in fields and key in fields[section]:
        hint = _expected(fields[section][key])
    where = origin.get(f"{section}.{key}") if key else None
    if where is None:
        line = _line_of(text, str(section), key) if section else None
        where = f"{path}, line {line}" if line else None
    return f"{message}{hint}" + (f" ({where})" if where else "")


def _expected(tp: Any) -> str:
    """`; expected one of: a, b` for an enum, or the field's own description."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "; expected one of: " + ", ".join(str(a) for a in args)
    for extra in args[1:]:
        if isinstance(extra, msgspec.Meta) and extra.description:
            return f"; expected {extra.description}"
    return ""


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """The line of the file that holds `[section]` or its `key`, if it is in the file."""
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line.strip("[] ")
            if key is None and current == section:
                return number
        elif key and current == section and line.split("=", 1)[0].strip() == key:
            return number
    return None


def read_text(what: str, path: str | Path) -> str:
    """A file the configuration names (or the configuration itself) as UTF-8 text; each way it can fail is one
    ConfigError naming `what` and the cause, never a traceback."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{what} {path} is UTF-16 text: save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"byte {exc.start} cannot be read"
        raise ConfigError(f"{what} {path} is not UTF-8 text ({reason}): save it as UTF-8") from None


def read_secret(key: str, path: str) -> Secret:
    """The secret in the file that configuration key `key` names; a file holding nothing but blanks is refused."""
    secret = Secret(read_text(key, path))
    if not secret:
        raise ConfigError(f"{key} {path} is empty: write the secret into it (a trailing newline is fine)")
    return secret
