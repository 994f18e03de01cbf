"""The "everything" server the MCP conformance suite expects (its tool, resource and prompt
names are fixed by the suite), written as an ordinary mcphost plugin.

Serve it with ``[plugins.conformance] prefix = ""`` so the names are the suite's own.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import trio
from pydantic import Field

import mcphost
from mcphost import types

from . import tasks

IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
"""A one-pixel red PNG."""
AUDIO = base64.b64decode("UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=")
"""A minimal WAV file."""

NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}

JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

ENUM_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option", "enum": ["option1", "option2"]},
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [{"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"}],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2"],
            "enumNames": ["Option One", "Option Two"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "items": {"type": "string", "enum": ["option1", "option2"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "items": {
                "anyOf": [{"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"}]
            },
        },
    },
    "required": [],
}

DEFAULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}


def _outcome(prefix: str, result: types.ElicitResult) -> str:
    return f"{prefix}: action={result.action}, content={json.dumps(result.content or {})}"


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [
        test_simple_text,
        test_image_content,
        test_audio_content,
        test_embedded_resource,
        test_multiple_content_types,
        test_tool_with_logging,
        test_tool_with_progress,
        test_error_handling,
        test_reconnection,
        test_sampling,
        test_elicitation,
        test_elicitation_sep1034_defaults,
        test_elicitation_sep1330_enums,
        json_schema_2020_12_tool,
        test_custom_headers,
        test_missing_capability,
        test_streaming_elicitation,
        test_logging_tool,
        test_input_required_result_elicitation,
        test_input_required_result_sampling,
        test_input_required_result_list_roots,
        test_input_required_result_request_state,
        test_input_required_result_multiple_inputs,
        test_input_required_result_multi_round,
        test_input_required_result_tampered_state,
        test_input_required_result_capabilities,
        *tasks.TOOLS,
    ]


def test_simple_text() -> str:
    """Tests simple text content response"""
    return "This is a simple text response for testing."


def test_image_content() -> mcphost.Image:
    """Tests image content response"""
    return mcphost.Image(data=IMAGE, format="png")


def test_audio_content() -> mcphost.Audio:
    """Tests audio content response"""
    return mcphost.Audio(data=AUDIO, format="wav")


def test_embedded_resource() -> list[types.EmbeddedResource]:
    """Tests embedded resource content response"""
    resource = types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return [types.EmbeddedResource(type="resource", resource=resource)]


def test_multiple_content_types() -> list[types.TextContent | types.ImageContent | types.EmbeddedResource]:
    """Tests response with multiple content types (text, image, resource)"""
    resource = types.TextResourceContents(
        uri="test://mixed-content-resource", mime_type="application/json", text='{"test": "data", "value": 123}'
    )
    return [
        types.TextContent(type="text", text="Multiple content types test:"),
        mcphost.Image(data=IMAGE, format="png").to_image_content(),
        types.EmbeddedResource(type="resource", resource=resource),
    ]


async def test_tool_with_logging(ctx: mcphost.ToolContext) -> str:
    """Tests tool that emits log messages during execution"""
    await ctx.log("info", "Tool execution started")
    await trio.sleep(0.05)
    await ctx.log("info", "Tool processing data")
    await trio.sleep(0.05)
    await ctx.log("info", "Tool execution completed")
    return "Tool with logging executed successfully"


async def test_tool_with_progress(ctx: mcphost.ToolContext) -> str:
    """Tests tool that reports progress notifications"""
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
        if step < 100:
            await trio.sleep(0.05)
    return "Progress reported"


def test_error_handling() -> str:
    """Tests error response handling"""
    raise mcphost.ToolError("This tool intentionally returns an error for testing")


async def test_reconnection(ctx: mcphost.ToolContext) -> str:
    """Tests SSE polling: closes the stream mid-call, answers after the client reconnects (SEP-1699)"""
    await trio.sleep(0.1)  # some work first: a stream closed at once never sent its priming event
    await ctx.close_sse_stream()
    await trio.sleep(0.2)
    return "Reconnection test completed"


async def test_sampling(
    prompt: Annotated[str, Field(description="The prompt to send to the LLM")], ctx: mcphost.ToolContext
) -> str:
    """Tests server-initiated sampling (LLM completion request)"""
    result = await ctx.sample(prompt, max_tokens=100)
    text = result.content.text if isinstance(result.content, types.TextContent) else "No response"
    return f"LLM response: {text}"


async def test_elicitation(
    message: Annotated[str, Field(description="The message to show the user")], ctx: mcphost.ToolContext
) -> str:
    """Tests server-initiated elicitation (user input request)"""
    schema = {
        "type": "object",
        "properties": {"response": {"type": "string", "description": "User's response"}},
        "required": ["response"],
    }
    return _outcome("User response", await ctx.elicit(message, schema))


async def test_elicitation_sep1034_defaults(ctx: mcphost.ToolContext) -> str:
    """Tests elicitation with default values for all primitive types (SEP-1034)"""
    result = await ctx.elicit("Please review and update the form fields with defaults", DEFAULTS_SCHEMA)
    return _outcome("Elicitation completed", result)


async def test_elicitation_sep1330_enums(ctx: mcphost.ToolContext) -> str:
    """Tests elicitation with enum schema improvements (SEP-1330)"""
    result = await ctx.elicit("Please select options from the enum fields", ENUM_SCHEMA)
    return _outcome("Elicitation completed", result)


@mcphost.tool(input_schema=JSON_SCHEMA_2020_12)
def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict[str, Any] | None = None,
    contactMethod: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> str:
    """Tool with JSON Schema 2020-12 features (SEP-1613, SEP-2106)"""
    return f"JSON Schema 2020-12 tool called with: name={name}, address={address}"


def test_custom_headers(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    """Echoes a parameter the client also sends as the Mcp-Param-Region header (SEP-2243)"""
    return f"region={region}"


async def test_missing_capability(ctx: mcphost.ToolContext) -> str:
    """Needs sampling, which the client must have declared (SEP-2575)"""
    result = await ctx.sample("Say hello", max_tokens=10)
    return f"sampled with {result.model}"


async def test_streaming_elicitation(ctx: mcphost.ToolContext) -> str:
    """Asks the user a question mid-call (SEP-2575)"""
    return _outcome("User response", await ctx.elicit("What is your name?", NAME_SCHEMA))


async def test_logging_tool(ctx: mcphost.ToolContext) -> str:
    """Logs at every level; only what the request opted in to reaches the client (SEP-2575)"""
    for level in ("debug", "info", "warning", "error"):
        await ctx.log(level, f"a {level} message")
    return "logged"


async def test_input_required_result_elicitation(ctx: mcphost.ToolContext) -> str:
    """Asks for the user's name, over two rounds on 2026-07-28 (SEP-2322)"""
    answer = await ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    return f"Hello, {(answer.content or {}).get('name', 'stranger')}!"


async def test_input_required_result_sampling(ctx: mcphost.ToolContext) -> str:
    """Asks the client's LLM a question (SEP-2322)"""
    answer = await ctx.sample("What is the capital of France?", max_tokens=100, key="capital_question")
    return f"LLM response: {answer.content.text if isinstance(answer.content, types.TextContent) else ''}"


async def test_input_required_result_list_roots(ctx: mcphost.ToolContext) -> str:
    """Asks the client for its roots (SEP-2322)"""
    roots = await ctx.list_roots(key="client_roots")
    return "Roots: " + ", ".join(str(root.uri) for root in roots.roots)


async def test_input_required_result_request_state(ctx: mcphost.ToolContext) -> str:
    """Asks for a confirmation; the second round carries the verified requestState (SEP-2322)"""
    answer = await ctx.elicit(
        "Please confirm", {"type": "object", "properties": {"ok": {"type": "boolean"}}}, key="confirm"
    )
    state = "state-ok" if ctx.request_state is not None else "no state"
    return f"{state}: confirmed={(answer.content or {}).get('ok')}"


async def test_input_required_result_multiple_inputs(ctx: mcphost.ToolContext) -> str:
    """Asks three questions in one round (SEP-2322)"""
    name, greeting, roots = await ctx.gather(
        ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name"),
        ctx.sample("Generate a greeting", max_tokens=50, key="greeting"),
        ctx.list_roots(key="client_roots"),
    )
    return f"name={(name.content or {}).get('name')}, greeting={greeting.content.text}, roots={len(roots.roots)}"


async def test_input_required_result_multi_round(ctx: mcphost.ToolContext) -> str:
    """Asks two questions, one per round (SEP-2322)"""
    name = await ctx.elicit("Step 1: What is your name?", NAME_SCHEMA, key="step1")
    color_schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    color = await ctx.elicit("Step 2: What is your favorite color?", color_schema, key="step2")
    return f"{(name.content or {}).get('name')} likes {(color.content or {}).get('color')}"


async def test_input_required_result_tampered_state(ctx: mcphost.ToolContext) -> str:
    """Asks a question; a tampered requestState on the retry is refused (SEP-2322)"""
    answer = await ctx.elicit(
        "Please confirm", {"type": "object", "properties": {"ok": {"type": "boolean"}}}, key="confirm"
    )
    return f"confirmed={(answer.content or {}).get('ok')}"


async def test_input_required_result_capabilities(ctx: mcphost.ToolContext) -> str:
    """Asks only what the client declared it can answer (SEP-2322)"""
    declared = ctx.client_capabilities or types.ClientCapabilities()
    questions = []
    if declared.elicitation is not None:
        questions.append(ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name"))
    if declared.sampling is not None:
        questions.append(ctx.sample("Generate a greeting", max_tokens=50, key="greeting"))
    if declared.roots is not None:
        questions.append(ctx.list_roots(key="client_roots"))
    answers = await ctx.gather(*questions)
    return f"{len(answers)} answer(s)"


@mcphost.hookimpl
def mcphost_resources() -> list[object]:
    return [static_text, static_binary, template, watched_resource]


@mcphost.resource("test://static-text", title="Static Text Resource", mime_type="text/plain")
def static_text() -> str:
    """A static text resource for testing"""
    return "This is the content of the static text resource."


@mcphost.resource("test://static-binary", title="Static Binary Resource", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (image) for testing"""
    return IMAGE


@mcphost.resource(
    "test://template/{id}/data",
    title="Resource Template",
    mime_type="application/json",
    complete={"id": ["123", "124", "200"]},
)
def template(id: str) -> str:
    """A resource template with parameter substitution"""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcphost.resource("test://watched-resource", title="Watched Resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource that can be subscribed to for updates"""
    return "Watched resource content"


@mcphost.hookimpl
def mcphost_prompts() -> list[object]:
    return [
        test_simple_prompt,
        test_prompt_with_arguments,
        test_prompt_with_embedded_resource,
        test_prompt_with_image,
        test_input_required_result_prompt,
    ]


@mcphost.prompt(title="Simple Test Prompt")
def test_simple_prompt() -> str:
    """A simple prompt without arguments"""
    return "This is a simple prompt for testing."


async def _cities(value: str, arguments: dict[str, str]) -> list[str]:
    return [city for city in ("paris", "park", "party", "prague") if city.startswith(value)]


@mcphost.prompt(title="Prompt With Arguments", complete={"arg1": _cities, "arg2": ["hello", "world"]})
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> str:
    """A prompt with required arguments"""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@mcphost.prompt(title="Prompt With Embedded Resource")
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[object]:
    """A prompt that includes an embedded resource"""
    contents = types.TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [types.EmbeddedResource(type="resource", resource=contents), "Please process the embedded resource above."]


@mcphost.prompt(title="Prompt With Image")
def test_prompt_with_image() -> list[object]:
    """A prompt that includes image content"""
    return [mcphost.Image(data=IMAGE, format="png"), "Please analyze the image above."]


@mcphost.prompt
async def test_input_required_result_prompt(ctx: mcphost.ToolContext) -> str:
    """A prompt that asks the user for context first (SEP-2322)"""
    schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
    answer = await ctx.elicit("What context should the prompt use?", schema, key="user_context")
    return f"Use this context: {(answer.content or {}).get('context')}"
