"""Management handlers in isolation: each op's request rules, the API call it makes and the data it answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from semookii_bridge.api import ApiError, ApiRejected, CloudClient
from semookii_bridge.interface.payloads import Response
from semookii_bridge.management.answer import handle_request

MAX = 65536


class FakeApi:
    """Records each client call as (method, args, kwargs) and answers what `answers` holds for the method."""

    def __init__(self, **answers: Any) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.answers = answers

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


async def ask(api: FakeApi, op: str, request: Any, *, max_payload: int = MAX) -> Response:
    payload = request if isinstance(request, bytes) else json.dumps(request).encode()
    return await handle_request(cast(CloudClient, api), op, payload, max_payload=max_payload)


async def ok(api: FakeApi, op: str, request: Any) -> Any:
    response = await ask(api, op, request)
    assert response.status == "ok" and response.error is None, response
    return response.data


async def refused(op: str, request: Any, code: str = "validation_error", **answers: Any) -> str:
    api = FakeApi(**answers)
    response = await ask(api, op, request)
    assert response.status == "error" and response.data is None and response.error is not None, response
    assert response.error.code == code, response.error
    if code in ("validation_error", "unknown_op", "payload_too_large", "invalid_json"):
        assert api.calls == [], "a refused request must not reach the API"
    return response.error.message


# ---- each op: the call it makes and what it answers ------------------------------------------------


async def test_group_add_answers_the_new_id() -> None:
    """group/add calls group_add with the name and answers {"id"}."""
    api = FakeApi(group_add="900")
    assert await ok(api, "group/add", {"name": "north"}) == {"id": "900"}
    assert api.calls == [("group_add", ("north",), {})]


async def test_group_rename_answers_id_and_name() -> None:
    """group/rename calls group_update(id, name); ids given as numbers come back as strings."""
    api = FakeApi()
    assert await ok(api, "group/rename", {"id": 1028902640000737745, "name": "n2"}) == {
        "id": "1028902640000737745",
        "name": "n2",
    }
    assert api.calls == [("group_update", ("1028902640000737745", "n2"), {})]


@pytest.mark.parametrize(("op", "one", "many"), [("group/remove", "group_delete", "group_delete_batch"),
                                                 ("inverter/remove", "inverter_delete", "inverter_delete_batch")])  # fmt: skip
async def test_remove_one_or_many(op: str, one: str, many: str) -> None:
    """`id` deletes one, `ids` deletes a batch; both answer the removed ids as a list."""
    api = FakeApi()
    assert await ok(api, op, {"id": "5"}) == {"removed": ["5"]}
    assert await ok(api, op, {"ids": ["6", 7]}) == {"removed": ["6", "7"]}
    assert api.calls == [(one, ("5",), {}), (many, (["6", "7"],), {})]


@pytest.mark.parametrize("op", ["group/remove", "inverter/remove"])
@pytest.mark.parametrize("request_", [{}, {"id": "1", "ids": ["2"]}, {"ids": []}])
async def test_remove_needs_exactly_one_of_id_or_ids(op: str, request_: dict[str, Any]) -> None:
    """Neither, both, or an empty `ids` list is refused before any call."""
    message = await refused(op, request_)
    assert message == "give exactly one of `id` or `ids`" or "$.ids" in message


async def test_remove_accepts_a_thousand_ids_and_refuses_more() -> None:
    """`ids` holds at most 1000 ids."""
    api = FakeApi()
    assert len((await ok(api, "group/remove", {"ids": [str(i) for i in range(1000)]}))["removed"]) == 1000
    await refused("group/remove", {"ids": [str(i) for i in range(1001)]})


async def test_group_list_pages_by_default() -> None:
    """group/list asks for page 1 of 20 unless told otherwise and answers the API's page."""
    api = FakeApi(group_find_all={"total": 1, "items": []})
    assert await ok(api, "group/list", {}) == {"total": 1, "items": []}
    assert await ok(api, "group/list", {"page": 3, "size": 1000}) == {"total": 1, "items": []}
    assert api.calls == [("group_find_all", (1, 20), {}), ("group_find_all", (3, 1000), {})]


async def test_group_list_all_reads_every_page() -> None:
    """`all: true` uses the all-pages call and answers its items with their count."""
    api = FakeApi(group_list_all=[{"id": "1"}, {"id": "2"}])
    assert await ok(api, "group/list", {"all": True}) == {"total": 2, "items": [{"id": "1"}, {"id": "2"}]}
    assert api.calls == [("group_list_all", (), {})]


@pytest.mark.parametrize("request_", [{"page": 0}, {"size": 0}, {"size": 1001}, {"page": "1"}, {"all": "yes"}])
async def test_paging_limits(request_: dict[str, Any]) -> None:
    """Pages start at 1, sizes run 1 to 1000, and types are strict."""
    await refused("group/list", request_)


async def test_group_search_by_name() -> None:
    """group/search passes the name fragment through."""
    api = FakeApi(group_find_like_name=[{"id": "1", "name": "north"}])
    assert await ok(api, "group/search", {"name": "nor"}) == [{"id": "1", "name": "north"}]
    assert api.calls == [("group_find_like_name", ("nor",), {})]


async def test_inverter_add_answers_the_new_id() -> None:
    """inverter/add calls inverter_add(group_id, sn)."""
    api = FakeApi(inverter_add="77")
    assert await ok(api, "inverter/add", {"group_id": 12, "sn": "H1234"}) == {"id": "77"}
    assert api.calls == [("inverter_add", ("12", "H1234"), {})]


async def test_inverter_replace_answers_id_and_new_sn() -> None:
    """inverter/replace calls inverter_update(id, new_sn)."""
    api = FakeApi()
    assert await ok(api, "inverter/replace", {"id": "3", "new_sn": "H9"}) == {"id": "3", "sn": "H9"}
    assert api.calls == [("inverter_update", ("3", "H9"), {})]


async def test_inverter_list_pages_or_reads_all() -> None:
    """inverter/list pages within a group by default, or reads every page with `all`."""
    api = FakeApi(inverter_find_by_group={"total": 0, "items": []}, inverter_list_all=[{"sn": "A"}])
    assert await ok(api, "inverter/list", {"group_id": "9"}) == {"total": 0, "items": []}
    assert await ok(api, "inverter/list", {"group_id": "9", "page": 2, "size": 5}) == {"total": 0, "items": []}
    assert await ok(api, "inverter/list", {"group_id": "9", "all": True}) == {"total": 1, "items": [{"sn": "A"}]}
    assert api.calls == [("inverter_find_by_group", ("9", 1, 20), {}), ("inverter_find_by_group", ("9", 2, 5), {}),
                         ("inverter_list_all", ("9",), {})]  # fmt: skip


async def test_inverter_list_needs_a_group() -> None:
    """inverter/list without group_id is refused."""
    await refused("inverter/list", {})


@pytest.mark.parametrize(
    ("request_", "kwargs"),
    [({"wifi_sn": "W1"}, {"wifi_sn": "W1", "sn": None}), ({"sn": "H1"}, {"wifi_sn": None, "sn": "H1"}),
     ({"wifi_sn": "W1", "sn": "H1"}, {"wifi_sn": "W1", "sn": "H1"})],
)  # fmt: skip
async def test_inverter_search_by_either_serial(request_: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """inverter/search filters by wifi_sn, sn or both within a group."""
    api = FakeApi(inverter_find_like=[])
    assert await ok(api, "inverter/search", {"group_id": "4", **request_}) == []
    assert api.calls == [("inverter_find_like", ("4",), kwargs)]


async def test_inverter_search_needs_no_filter() -> None:
    """inverter/search with only the group (the document marks wifiSn and inverterSn optional) is sent."""
    api = FakeApi(inverter_find_like={"total": 0, "items": []})
    await ok(api, "inverter/search", {"group_id": "4"})
    assert api.calls == [("inverter_find_like", ("4",), {"wifi_sn": None, "sn": None})]


async def test_command_query_answers_the_task_id() -> None:
    """command/query answers the command id and its task id (null while there is none)."""
    api = FakeApi(query_command="555")
    assert await ok(api, "command/query", {"command_id": 123}) == {"command_id": "123", "task_id": "555"}
    assert api.calls == [("query_command", ("123",), {})]


async def test_task_result_answers_the_results() -> None:
    """task/result answers the task id and its per-device results."""
    api = FakeApi(get_query_result={"D1": "success"})
    assert await ok(api, "task/result", {"task_id": "t-1"}) == {"task_id": "t-1", "results": {"D1": "success"}}
    assert api.calls == [("get_query_result", ("t-1",), {})]


async def test_device_bind_answers_the_bind_result() -> None:
    """device/bind passes the serial numbers and answers what the API said of each."""
    api = FakeApi(bind_sns={"success": ["A1"]})
    assert await ok(api, "device/bind", {"sns": ["A1"]}) == {"success": ["A1"]}
    assert api.calls == [("bind_sns", (["A1"],), {})]


# ---- request rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "request_"),
    [("group/add", {"name": ""}), ("group/add", {"name": "x" * 129}), ("group/add", {}),
     ("group/add", {"name": "x", "extra": 1}), ("group/rename", {"id": "", "name": "x"}),
     ("group/rename", {"id": "1" * 65, "name": "x"}), ("group/rename", {"id": True, "name": "x"}),
     ("group/rename", {"id": 1.5, "name": "x"}), ("inverter/add", {"group_id": "1", "sn": "bad sn"}),
     ("inverter/add", {"group_id": "1", "sn": "H" * 65}), ("task/result", {"task_id": ""}),
     ("task/result", {"task_id": "t" * 129}), ("device/bind", {"sns": []}), ("command/query", {})],
)  # fmt: skip
async def test_invalid_fields_are_refused(op: str, request_: dict[str, Any]) -> None:
    """Lengths, patterns, required and unknown fields are checked before any call."""
    await refused(op, request_)


async def test_longest_valid_fields_pass() -> None:
    """A 128-character name, a 64-character id and a 64-character serial number are accepted."""
    api = FakeApi(inverter_add="1")
    await ok(api, "group/rename", {"id": "1" * 64, "name": "n" * 128})
    await ok(api, "inverter/add", {"group_id": "2", "sn": "S" * 64})
    assert [c[0] for c in api.calls] == ["group_update", "inverter_add"]


async def test_validation_message_names_the_field() -> None:
    """The message of a refused field names its path."""
    message = await refused("group/add", {"name": 5})
    assert "$.name" in message


async def test_empty_payload_is_an_empty_request() -> None:
    """An empty or blank payload is `{}`: fine for group/list, missing fields elsewhere."""
    api = FakeApi(group_find_all={"items": []})
    assert (await ask(api, "group/list", b"")).status == "ok"
    assert (await ask(api, "group/list", b"  \n")).status == "ok"
    await refused("group/add", b"")


@pytest.mark.parametrize(("payload", "code"), [(b"{nope", "invalid_json"), (b"[1]", "validation_error"),
                                               (b'"x"', "validation_error")])  # fmt: skip
async def test_payload_must_be_a_json_object(payload: bytes, code: str) -> None:
    """Not JSON, or JSON that is not an object, is refused with its class."""
    await refused("group/list", payload, code)


async def test_payload_size_limit_is_inclusive() -> None:
    """A payload of exactly max_payload bytes is read; one byte more is payload_too_large."""
    payload = b'{"name":"abc"}'
    api = FakeApi(group_add="1")
    assert (await ask(api, "group/add", payload, max_payload=len(payload))).status == "ok"
    response = await ask(api, "group/add", payload, max_payload=len(payload) - 1)
    assert response.error is not None and response.error.code == "payload_too_large"
    assert response.error.message == f"payload of {len(payload)} bytes exceeds {len(payload) - 1}"
    assert response.transaction is None


async def test_unknown_op_lists_the_known_ones() -> None:
    """An unknown op is refused with the list of ops."""
    message = await refused("group/explode", {}, "unknown_op")
    assert message.startswith("unknown op 'group/explode'; known: command/query, device/bind, group/add, ")


# ---- the envelope ----------------------------------------------------------------------------------


async def test_transaction_is_echoed_and_not_sent_as_a_field() -> None:
    """`transaction` comes back in the answer (any JSON value) and is not a request field."""
    api = FakeApi(group_add="1")
    response = await ask(api, "group/add", {"name": "x", "transaction": {"n": 1}})
    assert response.status == "ok" and response.transaction == {"n": 1}
    assert api.calls == [("group_add", ("x",), {})]


@pytest.mark.parametrize(
    ("op", "request_", "answers", "code"),
    [("group/add", {"name": ""}, {}, "validation_error"), ("nope", {}, {}, "unknown_op"),
     ("group/add", {"name": "x"}, {"group_add": ApiRejected("name taken", endpoint="group_add")}, "api_error"),
     ("group/add", {"name": "x"}, {"group_add": RuntimeError("bug")}, "internal_error")],
)  # fmt: skip
async def test_every_error_carries_code_message_and_transaction(
    op: str, request_: dict[str, Any], answers: dict[str, Any], code: str
) -> None:
    """Refusals, API errors and the bridge's own failures all answer {status: error, error, transaction}."""
    response = await ask(FakeApi(**answers), op, {**request_, "transaction": "t-9"})
    assert response.status == "error" and response.transaction == "t-9" and response.data is None
    assert response.error is not None and response.error.code == code and response.error.message


async def test_api_error_keeps_its_code_and_message() -> None:
    """An API error is answered with the error's own code and message."""
    error = ApiRejected("Group name already exists", endpoint="group_add")
    response = await ask(FakeApi(group_add=error), "group/add", {"name": "x"})
    assert response.error is not None
    assert (response.error.code, response.error.message) == (error.code, "Group name already exists")
    assert isinstance(error, ApiError)


async def test_internal_error_names_the_exception_type_only() -> None:
    """A bug in the bridge is answered internal_error naming the exception type, not its text."""
    response = await ask(FakeApi(group_add=RuntimeError("secret detail")), "group/add", {"name": "x"})
    assert response.error is not None and "RuntimeError" in response.error.message
    assert "secret detail" not in response.error.message


async def test_the_guard_names_what_an_inverter_row_id_would_touch() -> None:
    """With allow-lists, an inverter row id is checked through the inventory: an allowed inverter passes, one
    outside the lists or unknown to the inventory is `not_allowed`; without allow-lists nothing is looked up."""
    from semookii_bridge.errors import BridgeError
    from semookii_bridge.management.guard import Guard
    from semookii_bridge.management.ops import OPS
    from semookii_bridge.management.requests import IdOrIds

    rows = {"11": ("100", "SN-OK"), "12": ("100", "SN-NO")}
    guard = Guard(allow_inverters=frozenset({"SN-OK"}), inverter_of=rows.get)
    op = OPS["inverter/remove"]
    await guard.check("inverter/remove", op, IdOrIds(id="11"))
    for inverter_id, why in (("12", "SN-NO"), ("13", "inventory")):
        with pytest.raises(BridgeError, match=why) as raised:
            await guard.check("inverter/remove", op, IdOrIds(id=inverter_id))
        assert raised.value.code == "not_allowed"
    await Guard().check("inverter/remove", op, IdOrIds(id="13"))
