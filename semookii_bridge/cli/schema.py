"""`schema asyncapi|json`: the MQTT interface as machine-readable documents, generated from the code's types."""

from __future__ import annotations

import click

from ..interface import wire


@click.group()
def schema() -> None:
    """Print the MQTT interface as machine-readable documents, generated from the code's types."""


@schema.command("asyncapi")
@click.option("--prefix", default="vpp", show_default=True, help="Topic prefix (mqtt.prefix).")
def schema_asyncapi(prefix: str) -> None:
    """The AsyncAPI 3.0 document (YAML) of topics, operations and payloads; docs/asyncapi.yaml is its output."""
    from ..interface import schema as interface  # PyYAML loads only for this command

    click.echo(interface.asyncapi_yaml(prefix), nl=False)


@schema.command("config")
@click.option(
    "--example",
    type=click.Path(exists=True, dir_okay=False),
    default="semookii-bridge.example.toml",
    show_default=True,
    help="The annotated example file whose comments give each key's meaning.",
)
def schema_config(example: str) -> None:
    """The configuration reference (Markdown); docs/configuration.md is its output."""
    from pathlib import Path

    from ..config.doc import markdown

    click.echo(markdown(Path(example).read_text(encoding="utf-8")), nl=False)


@schema.command("json")
def schema_json() -> None:
    """The JSON Schema of every payload (commands, states, management requests and answers, budget)."""
    from ..interface import schema as interface

    click.echo(wire.encode({"$defs": interface.json_schemas()}).decode())
