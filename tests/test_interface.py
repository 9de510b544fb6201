"""The machine-readable interface: docs/asyncapi.yaml is what the code generates, and the official AsyncAPI
parser (npm `@asyncapi/parser`, an independent implementation) accepts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from semookii_bridge.control.commands import COMMAND_TYPES
from semookii_bridge.interface import schema
from semookii_bridge.interface.payloads import INTERFACE_VERSION, StateMessage
from semookii_bridge.management.ops import OPS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
PARSER_VERSION = "3.6.6"
CACHE = Path(os.environ.get("SEMOOKII_ASYNCAPI_CACHE", ROOT / ".cache" / "asyncapi"))


def test_the_committed_asyncapi_document_is_what_the_code_generates() -> None:
    """Regenerating docs/asyncapi.yaml changes nothing (run `semookii-bridge schema asyncapi > docs/asyncapi.yaml`
    after changing a payload, and raise INTERFACE_VERSION)."""
    assert COMMITTED.read_text() == schema.asyncapi_yaml()


def test_the_document_covers_every_command_type_op_and_state_field() -> None:
    """Every command type, management op and state field appears in the generated schemas."""
    doc = yaml.safe_load(COMMITTED.read_text())
    schemas = doc["components"]["schemas"]
    assert doc["info"]["version"] == INTERFACE_VERSION
    tags = {s["properties"]["type"]["enum"][0] for s in schemas.values() if "type" in s.get("properties", {})
            and "enum" in s["properties"]["type"]}  # fmt: skip
    assert set(COMMAND_TYPES) <= tags
    assert {schema._request_name(op) for op in OPS} <= set(schemas)
    assert set(StateMessage.__struct_fields__) == set(schemas["StateMessage"]["properties"])


@pytest.fixture(scope="session")
def asyncapi_parser() -> Path:
    """@asyncapi/parser installed from npm into a cache dir (skipped only where npm is absent)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node are not installed: the AsyncAPI parser test needs them")
    modules = CACHE / "node_modules"
    if not (modules / "@asyncapi" / "parser").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--omit=dev",
                        f"@asyncapi/parser@{PARSER_VERSION}"], check=True, capture_output=True, timeout=600)  # fmt: skip
    return modules


def parse(modules: Path, document: Path) -> dict[str, object]:
    script = ROOT / "tests" / "asyncapi" / "validate.js"
    out = subprocess.run([shutil.which("node") or "node", str(script), str(document)], capture_output=True,
                         text=True, check=True, timeout=120, env={**os.environ, "NODE_PATH": str(modules)})  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_official_asyncapi_parser_accepts_the_document(asyncapi_parser: Path) -> None:
    """@asyncapi/parser parses docs/asyncapi.yaml with no error and no warning, 19 channels and operations."""
    result = parse(asyncapi_parser, COMMITTED)
    assert result == {"parsed": True, "errors": [], "warnings": [], "channels": 19, "operations": 19}


def test_the_parser_would_catch_a_broken_document(asyncapi_parser: Path, tmp_path: Path) -> None:
    """The same check fails on a document with an invalid operation (so the test above can fail)."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(COMMITTED.read_text().replace("action: receive", "action: listen", 1))
    result = parse(asyncapi_parser, broken)
    assert result["parsed"] is False and result["errors"]


def test_schema_json_prints_every_payload_schema() -> None:
    """`semookii-bridge schema json` prints the same schemas as the AsyncAPI document's components."""
    from click.testing import CliRunner

    from semookii_bridge.cli import main

    out = CliRunner().invoke(main, ["schema", "json"])
    assert out.exit_code == 0
    assert msgspec.json.decode(out.output)["$defs"] == json.loads(json.dumps(schema.json_schemas()))


def test_readme_and_docs_link_only_inside_the_repository() -> None:
    """No markdown link in README or docs/ leaves the repository (a clone must not have broken links)."""
    import re

    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            assert "://" not in target, (page.name, target)
            assert (page.parent / target.split("#")[0]).resolve().is_relative_to(ROOT), (page.name, target)
            if target.split("#")[0]:
                assert (page.parent / target.split("#")[0]).exists(), (page.name, target)
