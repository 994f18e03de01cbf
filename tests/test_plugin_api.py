"""What a plugin can do through mcphost's API, seen by a real ``mcp.Client`` talking to a real
daemon on both protocol paths: a 2025-11-25 session and stateless 2026-07-28 requests.

The daemon serves the ``conformance`` plugin (unprefixed, the suite's names) and the
``features`` plugin from ``tests/plugins/mcphost-conformance``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    Root,
    TextContent,
)

from mcphost.testing import RunningDaemon
from tests.conftest import ISOLATIONS, MODES, isolated

CONFIG = {
    "sessions": {"store": "none"},
    "plugins": {"enable": ["conformance", "features"], "conformance": {"prefix": ""}},
}

# The deprecated-in-2026 client calls (sampling, logging, resources/subscribe) are what we test.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@pytest.fixture(scope="module", params=ISOLATIONS)
def daemon(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    """The same plugins inline and in worker processes: authors change nothing."""
    return module_daemon(isolated(CONFIG, request.param))


async def sample(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
    prompt = params.messages[0].content
    text = prompt.text if isinstance(prompt, TextContent) else "?"
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"echo: {text}"), model="m")


def answer_with(content: dict[str, Any], seen: list[Any] | None = None) -> Any:
    async def elicit(context: Any, params: Any) -> ElicitResult:
        if seen is not None:
            seen.append(params)
        return ElicitResult(action="accept", content=content)

    return elicit


async def list_roots(context: Any) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///srv/project", name="project")])


def matching(daemon: RunningDaemon, **fields: Any) -> list[dict[str, Any]]:
    """The daemon's log records with these fields."""
    return [r for r in daemon.log_records() if all(r.get(k) == v for k, v in fields.items())]


async def next_log_record(daemon: RunningDaemon, seen: int, **fields: Any) -> dict[str, Any]:
    """The first record with these fields after the ``seen`` already there, waited for in a thread."""

    def wait() -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while len(found := matching(daemon, **fields)) <= seen:
            assert time.monotonic() < deadline, f"no new log record with {fields}"
            time.sleep(0.05)
        return found[seen]

    return await trio.to_thread.run_sync(wait)


# -- results: every content type, structured output ---------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_content_type(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        image = (await client.call_tool("test_image_content", {})).content[0]
        audio = (await client.call_tool("test_audio_content", {})).content[0]
        embedded = (await client.call_tool("test_embedded_resource", {})).content[0]
        mixed = (await client.call_tool("test_multiple_content_types", {})).content
        links = (await client.call_tool("features_links", {})).content
    assert (image.type, image.mime_type) == ("image", "image/png")
    assert (audio.type, audio.mime_type) == ("audio", "audio/wav")
    assert embedded.type == "resource" and embedded.resource.text == "This is an embedded resource content."
    assert [c.type for c in mixed] == ["text", "image", "resource"]
    assert [c.type for c in links] == ["text", "resource_link"] and str(links[1].uri) == "test://static-text"


@pytest.mark.parametrize("mode", MODES)
async def test_structured_output_with_its_schema(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("features_forecast", {"city": "Oslo"})
    assert set(tools["features_forecast"].output_schema["properties"]) == {"city", "high", "conditions"}
    assert result.structured_content == {"city": "Oslo", "high": 21, "conditions": ["sunny", "breezy"]}
    assert json.loads(result.content[0].text) == result.structured_content


@pytest.mark.parametrize("mode", MODES)
async def test_published_input_schema_overrides_the_derived_one(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("json_schema_2020_12_tool", {"name": "Ada", "email": "ada@example.com"})
    schema = tools["json_schema_2020_12_tool"].input_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False and "if" in schema
    assert "name=Ada" in result.content[0].text


# -- progress and logging -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_sync_tool_reports_progress_from_its_thread(daemon: RunningDaemon, mode: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(daemon.url, mode=mode) as client:
        result = await client.call_tool("features_count_in_thread", {}, progress_callback=on_progress)
    assert result.content[0].text == "counted" and seen == [1, 2, 3]


async def test_logging_honours_set_level_on_a_session(daemon: RunningDaemon) -> None:
    received: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with Client(daemon.url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("features_log_levels", {})
        everything = [p.level for p in received]
        received.clear()
        await client.set_logging_level("warning")
        await client.call_tool("features_log_levels", {})
    assert everything == ["debug", "info", "warning", "error"]  # no level set: all of them
    assert [p.level for p in received] == ["warning", "error"]
    assert received[0].logger == "features" and received[0].data == "warning message"


async def test_logging_is_a_per_request_opt_in_on_2026(daemon: RunningDaemon) -> None:
    received: list[str] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        received.append(params.level)

    async with Client(daemon.url, mode="2026-07-28", logging_callback=on_log) as client:
        await client.call_tool("features_log_levels", {})
    assert received == []  # no opt-in, no log messages
    async with Client(daemon.url, mode="2026-07-28", logging_callback=on_log, log_level="info") as client:
        await client.call_tool("features_log_levels", {})
        with pytest.raises(MCPError):  # logging/setLevel is gone in 2026-07-28
            await client.set_logging_level("debug")
    assert received == ["info", "warning", "error"]


# -- asking the client: sampling, elicitation, roots ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_sampling(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode, sampling_callback=sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "capital of France?"})
    assert result.content[0].text == "LLM response: echo: capital of France?"


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_form_with_defaults_and_enums(daemon: RunningDaemon, mode: str) -> None:
    seen: list[Any] = []
    answer = answer_with({"name": "Jane", "status": "inactive"}, seen)
    async with Client(daemon.url, mode=mode, elicitation_callback=answer) as client:
        defaults = await client.call_tool("test_elicitation_sep1034_defaults", {})
        enums = await client.call_tool("test_elicitation_sep1330_enums", {})
    assert (
        defaults.content[0].text
        == 'Elicitation completed: action=accept, content={"name": "Jane", "status": "inactive"}'
    )
    assert not enums.is_error
    default_schema, enum_schema = seen[0].requested_schema["properties"], seen[1].requested_schema["properties"]
    assert default_schema["age"] == {"type": "integer", "description": "User age", "default": 30}
    assert enum_schema["titledSingle"]["oneOf"][0] == {"const": "value1", "title": "First Option"}
    assert enum_schema["legacyEnum"]["enumNames"] == ["Option One", "Option Two"]


@pytest.mark.parametrize("mode", MODES)
async def test_questions_over_several_rounds_and_at_once(daemon: RunningDaemon, mode: str) -> None:
    """On 2026-07-28 each question is a round of InputRequiredResult; the tool code is the same."""
    answer = answer_with({"name": "Ada", "color": "teal"})
    async with Client(
        daemon.url, mode=mode, elicitation_callback=answer, sampling_callback=sample, list_roots_callback=list_roots
    ) as client:
        rounds = await client.call_tool("test_input_required_result_multi_round", {})
        together = await client.call_tool("test_input_required_result_multiple_inputs", {})
        roots = await client.call_tool("features_roots", {})
    assert rounds.content[0].text == "Ada likes teal"
    assert together.content[0].text == "name=Ada, greeting=echo: Generate a greeting, roots=1"
    assert roots.structured_content == {"result": ["file:///srv/project"]}


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_can_ask_too(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode, elicitation_callback=answer_with({"context": "ops"})) as client:
        prompt = await client.get_prompt("test_input_required_result_prompt")
    assert prompt.messages[0].content.text == "Use this context: ops"


async def test_a_tool_may_return_its_own_input_required_result(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="2026-07-28", elicitation_callback=answer_with({"ok": True})) as client:
        result = await client.call_tool("features_confirm_by_hand", {})
    assert result.content[0].text == "confirmed=True after asked"


async def test_asking_a_client_that_cannot_answer_is_a_tool_error_on_a_session(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="legacy") as client:
        result = await client.call_tool("test_sampling", {"prompt": "hi"})
    assert (
        result.is_error
        and result.content[0].text == "tool 'test_sampling' failed: the client does not support sampling"
    )


async def test_asking_a_client_that_cannot_answer_is_the_2026_capability_error(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="2026-07-28") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("test_sampling", {"prompt": "hi"})
    assert raised.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert raised.value.error.data == {"requiredCapabilities": {"sampling": {}}}
    record = await next_log_record(daemon, 0, event="request", method="tools/call", rpc_error=-32021)
    assert record["tool_status"] == "error"


async def test_a_connection_without_a_back_channel_cannot_ask(module_daemon: Any) -> None:
    """With JSON responses a session has no stream for a request to the client."""
    daemon = module_daemon({**CONFIG, "server": {"json_response": True}})
    async with Client(daemon.url, mode="legacy", elicitation_callback=answer_with({})) as client:
        result = await client.call_tool("test_elicitation", {"message": "hi"})
    assert result.is_error
    assert "this connection cannot carry elicitation/create to the client" in result.content[0].text


async def test_a_tampered_request_state_is_refused(daemon: RunningDaemon) -> None:
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "test_input_required_result_tampered_state",
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    params: dict[str, Any] = {"name": "test_input_required_result_tampered_state", "arguments": {}, "_meta": meta}
    async with httpx.AsyncClient(headers=headers) as http:
        first = (
            await http.post(daemon.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        ).json()
        state = first["result"]["requestState"]
        retry = {**params, "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}}}
        honest = await http.post(
            daemon.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {**retry, "requestState": state}},
        )
        forged = await http.post(
            daemon.url,
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {**retry, "requestState": state + "x"}},
        )
    assert first["result"]["resultType"] == "input_required" and "confirm" in first["result"]["inputRequests"]
    assert honest.json()["result"]["content"][0]["text"] == "confirmed=True"
    assert forged.status_code == 400 and forged.json()["error"]["code"] == -32602


# -- resources, subscriptions, prompts, completions -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_resources_text_binary_and_templated(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        text = (await client.read_resource("test://static-text")).contents[0]
        binary = (await client.read_resource("test://static-binary")).contents[0]
        templated = (await client.read_resource("test://template/42/data")).contents[0]
    assert text.text == "This is the content of the static text resource." and text.mime_type == "text/plain"
    assert binary.mime_type == "image/png" and binary.blob
    assert json.loads(templated.text) == {"id": "42", "templateTest": True, "data": "Data for ID: 42"}


async def test_subscribers_hear_of_updates_on_a_session(daemon: RunningDaemon) -> None:
    updates: list[str] = []
    heard = trio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(message.params.uri)
            heard.set()

    async with Client(daemon.url, mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("test://watched-resource")
        await client.call_tool("features_announce", {"uri": "test://static-text"})  # not subscribed
        await client.call_tool("features_announce", {"uri": "test://watched-resource"})
        with trio.fail_after(5):
            await heard.wait()
        await client.unsubscribe_resource("test://watched-resource")
        await client.call_tool("features_announce", {"uri": "test://watched-resource"})
        await trio.sleep(0.2)
        with pytest.raises(MCPError):
            await client.subscribe_resource("test://no-such-resource")
    assert updates == ["test://watched-resource"]


async def test_listeners_hear_of_updates_on_2026(daemon: RunningDaemon) -> None:
    async with (
        Client(daemon.url, mode="2026-07-28") as client,
        client.listen(resource_subscriptions=["test://watched-resource"]) as updates,
    ):
        await client.call_tool("features_announce", {"uri": "test://static-text"})
        await client.call_tool("features_announce", {"uri": "test://watched-resource"})
        with trio.fail_after(5):
            event = await updates.__anext__()
        with pytest.raises(MCPError):  # resources/subscribe is gone in 2026-07-28
            await client.subscribe_resource("test://watched-resource")
    assert event.uri == "test://watched-resource"


@pytest.mark.parametrize("mode", MODES)
async def test_prompts_with_arguments_resources_and_images(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
        with_args = await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        embedded = await client.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://x"})
        image = await client.get_prompt("test_prompt_with_image")
    assert [(a.name, a.required) for a in listed["test_prompt_with_arguments"].arguments] == [
        ("arg1", True),
        ("arg2", True),
    ]
    assert "ctx" not in [a.name for a in listed["test_input_required_result_prompt"].arguments or ()]
    assert with_args.messages[0].content.text == "Prompt with arguments: arg1='a', arg2='b'"
    assert [m.content.type for m in embedded.messages] == ["resource", "text"]
    assert str(embedded.messages[0].content.resource.uri) == "test://x"
    assert [m.content.type for m in image.messages] == ["image", "text"]


@pytest.mark.parametrize("mode", MODES)
async def test_completions_of_prompt_arguments_and_template_placeholders(daemon: RunningDaemon, mode: str) -> None:
    prompt = PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
    template = ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
    async with Client(daemon.url, mode=mode) as client:
        computed = await client.complete(prompt, {"name": "arg1", "value": "par"})
        listed = await client.complete(prompt, {"name": "arg2", "value": "w"})
        placeholder = await client.complete(template, {"name": "id", "value": "12"})
        nothing = await client.complete(prompt, {"name": "no_such_argument", "value": ""})
        with pytest.raises(MCPError):
            await client.complete(PromptReference(type="ref/prompt", name="no_such_prompt"), {"name": "a", "value": ""})
    assert computed.completion.values == ["paris", "park", "party"] and computed.completion.total == 3
    assert listed.completion.values == ["world"]
    assert placeholder.completion.values == ["123", "124"]
    assert nothing.completion.values == []


# -- cancellation, identity ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", ["features_wait", "features_block"])
async def test_a_call_the_client_gives_up_on_is_cancelled(daemon: RunningDaemon, mode: str, tool: str) -> None:
    """notifications/cancelled on a session, a closed stream on 2026-07-28: the async tool is
    cancelled, the blocked thread abandoned, and the call logged as cancelled."""
    seen = len(matching(daemon, event="request", tool=tool, tool_status="cancelled"))
    async with Client(daemon.url, mode=mode) as client:
        with trio.move_on_after(0.5):
            await client.call_tool(tool, {"seconds": 30 if tool == "features_wait" else 2})
        assert (await client.call_tool("test_simple_text", {})).content[0].text  # still serving
    record = await next_log_record(daemon, seen, event="request", tool=tool, tool_status="cancelled")
    assert record["tool_ms"] < 2_000


async def test_identity_is_none_without_authentication(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="2026-07-28") as client:
        result = await client.call_tool("features_identity", {})
    assert result.content[0].text == "None"


# -- resumable streams ------------------------------------------------------------------------


async def test_a_closed_stream_is_resumed_from_the_event_store(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="legacy") as client:
        with trio.fail_after(15):
            result = await client.call_tool("test_reconnection", {})
    assert result.content[0].text == "Reconnection test completed"


def _open_session(http: httpx.Client, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    response = http.post(url, json=init, headers={"accept": "application/json, text/event-stream"})
    headers = {"mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


@pytest.fixture(scope="module", params=["memory", "none"])
def store_daemon(request: pytest.FixtureRequest, module_daemon: Any) -> RunningDaemon:
    return module_daemon({**CONFIG, "server": {"event_store": request.param}})


def test_get_with_an_unknown_last_event_id_gets_a_stream(store_daemon: RunningDaemon) -> None:
    """Without an event store (or for an event it no longer holds) there is nothing to
    replay: the client gets a stream, not an error."""
    with httpx.Client(timeout=5) as http:
        headers = _open_session(http, store_daemon.url)
        headers |= {"accept": "text/event-stream", "last-event-id": "12345"}
        with http.stream("GET", store_daemon.url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
