"""`api <endpoint>`: one subcommand per row of `ENDPOINTS`, each calling the client and printing JSON.

The table is the only place a subcommand is written: its name, help, click parameters, the API endpoints it
covers (a test checks that together they cover the document's 18) and the call it makes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from ..api import ApiError, CloudClient, RetryPolicy
from ..api import endpoints as ep
from ..api.endpoints import Endpoint
from ..api.params import ControlParams
from ..config import API_BASE_URL
from ..control.commands import to_params
from ..interface import wire
from .options import command_arg, ids, token

Args = Mapping[str, Any]
Call = Callable[[CloudClient, Args], Awaitable[Any]]


@dataclass(frozen=True)
class ApiCommand:
    """One `api` subcommand: how it is called on the command line and which client call it makes."""

    name: str
    help: str
    params: tuple[click.Parameter, ...]
    covers: tuple[Endpoint, ...]
    call: Call


@dataclass(frozen=True)
class ApiContext:
    """What every `api` subcommand needs: where to call and with which token."""

    base_url: str
    token_file: str | None
    timeout: float
    attempts: int

    def run(self, call: Callable[[CloudClient], Awaitable[Any]]) -> None:
        """Run one API call and print its answer as JSON (ids as strings); exit 1 on API failure."""
        secret = token(self.token_file)

        async def attempt() -> Any:
            retry = RetryPolicy(attempts=self.attempts)
            async with CloudClient(self.base_url, secret, timeout=self.timeout, retry=retry) as client:
                return await call(client)

        try:
            result = asyncio.run(attempt())
        except ApiError as exc:
            click.echo(wire.encode({"code": exc.code, "message": exc.message, "endpoint": exc.endpoint}), err=True)
            sys.exit(1)
        click.echo(wire.encode(wire.to_user(result)).decode())


def _arg(name: str) -> click.Argument:
    return click.Argument([name])


def _ids_arg(name: str) -> click.Argument:
    """Any number of ids, space or comma separated, at least one."""
    return click.Argument([name], nargs=-1, required=True, callback=lambda _c, _p, value: ids(value))


def _params_of(_ctx: click.Context, _param: click.Parameter, value: str) -> ControlParams:
    return to_params(command_arg(value))


COMMAND = click.Argument(["command"], callback=_params_of)
PAGING = (
    click.Option(["--current"], default=1, show_default=True, type=click.IntRange(1), help="Page number."),
    click.Option(["--size"], default=20, show_default=True, type=click.IntRange(1, 1000)),
    click.Option(["--all", "all_pages"], is_flag=True, help="Read every page."),
)


async def _keyed(key: str, call: Awaitable[Any]) -> dict[str, Any]:
    return {key: await call}


async def _done(call: Awaitable[None]) -> dict[str, bool]:
    await call
    return {"ok": True}


def _group_list(c: CloudClient, a: Args) -> Awaitable[Any]:
    if a["all_pages"]:
        return _keyed("groups", c.group_list_all(page_size=max(a["size"], 100)))
    return c.group_find_all(a["current"], a["size"])


def _inverter_list(c: CloudClient, a: Args) -> Awaitable[Any]:
    if a["all_pages"]:
        return _keyed("inverters", c.inverter_list_all(a["group_id"], page_size=max(a["size"], 100)))
    return c.inverter_find_by_group(a["group_id"], a["current"], a["size"])


ENDPOINTS: tuple[ApiCommand, ...] = (
    ApiCommand(
        "single-control",
        "Control one inverter. COMMAND is a JSON command as on the /set topic.",
        (_arg("sn"), COMMAND),
        (ep.SINGLE_CONTROL,),
        lambda c, a: _keyed("command_id", c.single_control(a["sn"], a["command"])),
    ),
    ApiCommand(
        "batch-control",
        "Control several inverters (SNS space or comma separated).",
        (_ids_arg("sns"), COMMAND),
        (ep.BATCH_CONTROL,),
        lambda c, a: _keyed("command_id", c.batch_control(a["sns"], a["command"])),
    ),
    ApiCommand(
        "group-control",
        "Control every inverter of a group.",
        (_arg("group_id"), COMMAND),
        (ep.GROUP_CONTROL,),
        lambda c, a: _keyed("command_id", c.group_control(a["group_id"], a["command"])),
    ),
    ApiCommand(
        "group-add",
        "Create a group; prints its id.",
        (_arg("name"),),
        (ep.GROUP_ADD,),
        lambda c, a: _keyed("id", c.group_add(a["name"])),
    ),
    ApiCommand(
        "group-update",
        "Rename a group.",
        (_arg("group_id"), _arg("name")),
        (ep.GROUP_UPDATE,),
        lambda c, a: _done(c.group_update(a["group_id"], a["name"])),
    ),
    ApiCommand(
        "group-delete",
        "Delete one group.",
        (_arg("group_id"),),
        (ep.GROUP_DELETE,),
        lambda c, a: _done(c.group_delete(a["group_id"])),
    ),
    ApiCommand(
        "group-delete-batch",
        "Delete several groups in one call.",
        (_ids_arg("group_ids"),),
        (ep.GROUP_DELETE_BATCH,),
        lambda c, a: _done(c.group_delete_batch(a["group_ids"])),
    ),
    ApiCommand("group-list", "List groups, one page or --all.", PAGING, (ep.GROUP_FIND_ALL,), _group_list),
    ApiCommand(
        "group-search",
        "Groups whose name contains NAME.",
        (_arg("name"),),
        (ep.GROUP_FIND_LIKE_NAME,),
        lambda c, a: c.group_find_like_name(a["name"]),
    ),
    ApiCommand(
        "inverter-add",
        "Add inverter SN to a group; prints the inverter id.",
        (_arg("group_id"), _arg("sn")),
        (ep.INVERTER_ADD,),
        lambda c, a: _keyed("id", c.inverter_add(a["group_id"], a["sn"])),
    ),
    ApiCommand(
        "inverter-delete",
        "Remove one inverter (by inverter id) from its group.",
        (_arg("inverter_id"),),
        (ep.INVERTER_DELETE,),
        lambda c, a: _done(c.inverter_delete(a["inverter_id"])),
    ),
    ApiCommand(
        "inverter-delete-batch",
        "Remove several inverters in one call.",
        (_ids_arg("inverter_ids"),),
        (ep.INVERTER_DELETE_BATCH,),
        lambda c, a: _done(c.inverter_delete_batch(a["inverter_ids"])),
    ),
    ApiCommand(
        "inverter-update",
        "Replace the inverter behind INVERTER_ID with NEW_SN.",
        (_arg("inverter_id"), _arg("new_sn")),
        (ep.INVERTER_UPDATE,),
        lambda c, a: _done(c.inverter_update(a["inverter_id"], a["new_sn"])),
    ),
    ApiCommand(
        "inverter-list",
        "List a group's inverters, one page or --all.",
        (_arg("group_id"), *PAGING),
        (ep.INVERTER_FIND_BY_GROUP,),
        _inverter_list,
    ),
    ApiCommand(
        "inverter-search",
        "Inverters of a group matching --wifi-sn and/or --sn.",
        (
            _arg("group_id"),
            click.Option(["--wifi-sn"], help="Part of the dongle registration number."),
            click.Option(["--sn"], help="Part of the inverter serial number."),
        ),
        (ep.INVERTER_FIND_LIKE,),
        lambda c, a: c.inverter_find_like(a["group_id"], wifi_sn=a["wifi_sn"], sn=a["sn"]),
    ),
    ApiCommand(
        "query-command",
        "The task id of a command (null until the cloud dispatched it).",
        (_arg("command_id"),),
        (ep.QUERY_COMMAND,),
        lambda c, a: _keyed("task_id", c.query_command(a["command_id"])),
    ),
    ApiCommand(
        "query-result",
        "Per-device results of a task (null until they are in).",
        (_arg("task_id"),),
        (ep.GET_QUERY_RESULT,),
        lambda c, a: _keyed("results", c.get_query_result(a["task_id"])),
    ),
    ApiCommand(
        "bind",
        "Bind dongles (registration numbers) to the account; any number, sent 100 per call.",
        (_ids_arg("sns"),),
        (ep.REGISTER_SN,),
        lambda c, a: c.bind_sns(a["sns"]),
    ),
)


def _subcommand(spec: ApiCommand) -> click.Command:
    """The click command for one table row: parse, then run its call in the group's ApiContext."""

    @click.pass_obj
    def callback(ctx: ApiContext, /, **args: Any) -> None:
        ctx.run(lambda client: spec.call(client, args))

    return click.Command(spec.name, params=list(spec.params), callback=callback, help=spec.help)


@click.group()
@click.option(
    "--base-url",
    envvar="SEMOOKII_BRIDGE_API_BASE_URL",
    default=API_BASE_URL,
    show_default=True,
    help="API root (env SEMOOKII_BRIDGE_API_BASE_URL).",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="Read the token from this file instead of $SEMOOKII_TOKEN."
)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Seconds per HTTP call.")
@click.option("--attempts", default=4, show_default=True, type=click.IntRange(1, 10), help="Tries per call.")
@click.pass_context
def api(ctx: click.Context, base_url: str, token_file: str | None, timeout: float, attempts: int) -> None:
    """Call one Cloud API endpoint and print the answer as JSON. Token: $SEMOOKII_TOKEN or --token-file."""
    ctx.obj = ApiContext(base_url, token_file, timeout, attempts)


for _spec in ENDPOINTS:
    api.add_command(_subcommand(_spec))
