"""The MCP server in memory (SDK client, fake engine): content, thumbnails, errors, progress, cancel."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ElicitRequest, ElicitResult, ImageContent, InputRequiredResult, TextContent
from PIL import Image

from img_agent.errors import ModelMismatchError
from img_agent.tools import TOOL_NAMES, ImageTools, dispatch
from img_agent.tools.shapes import SearchResult
from img_agent.tools.mcp_server import create_server
from img_agent.tools.sandbox import Sandbox
from img_agent.testing import make_images

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def strip_parameters(message: str) -> str:
    return re.sub(r" Parameters: .*\.$", "", message)


def texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def test_lists_and_calls_tools(indexed_tools: ImageTools) -> None:
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        listed = await client.list_tools()
        assert [tool.name for tool in listed.tools] == list(TOOL_NAMES)
        result = await client.call_tool("search_by_text", {"query": "pattern", "k": 4, "thumbnails": 0})
    assert not result.is_error
    parsed = SearchResult.model_validate(result.structured_content)
    assert [hit.rank for hit in parsed.hits] == [1, 2, 3, 4]
    assert len(result.content) == 1
    text = texts(result)[0]
    assert text.startswith("Query: pattern\n4 image(s), best first")
    assert f"1. id {parsed.hits[0].id}  score" in text and parsed.hits[0].path in text


async def test_thumbnails_are_bounded_jpegs(indexed_tools: ImageTools) -> None:
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        result = await client.call_tool("search_by_text", {"query": "x", "k": 5, "thumbnails": 2, "thumbnail_size": 40})
        default = await client.call_tool("search_by_image", {"image_id": 0})
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(images) == 2
    hits = result.structured_content["hits"]
    captions = texts(result)[1:]
    assert captions == [f"[1] id {hits[0]['id']}: {hits[0]['path']}", f"[2] id {hits[1]['id']}: {hits[1]['path']}"]
    for block in images:
        assert block.mime_type == "image/jpeg"
        with Image.open(io.BytesIO(base64.b64decode(block.data))) as image:
            assert image.format == "JPEG" and max(image.size) <= 40
    assert sum(isinstance(block, ImageContent) for block in default.content) == 3  # the default count


async def test_errors_are_is_error_results_with_the_dispatcher_texts(indexed_tools: ImageTools, image_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((image_dir / "img_0000.jpg").read_bytes())
    cases = [
        ("search_by_text", {"query": "cat", "k": 0}),  # validation
        ("search_by_text", {"query": "cat", "bogus": 1}),  # unknown parameter
        ("search_by_image", {"path": str(outside)}),  # outside the roots
        ("search_by_image", {"path": str(image_dir / "missing.jpg")}),  # bad path
        ("search_by_image", {"image_id": 4242}),  # unknown id
        ("search_by_image", {"image_base64": base64.b64encode(b"garbage bytes").decode()}),  # undecodable
        ("remove_images", {"ids": [4242]}),
    ]
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        for name, arguments in cases:
            result = await client.call_tool(name, arguments)
            assert result.is_error, (name, arguments)
            [message] = texts(result)
            openai_message = json.loads(dispatch(indexed_tools, name, json.dumps(arguments)))["error"]
            # one validation, one text; only the list of accepted parameters is per surface
            # (MCP adds the thumbnail options)
            assert strip_parameters(message) == strip_parameters(openai_message)
            assert not message.startswith("Error executing tool")


async def test_an_unknown_tool_is_a_protocol_error_naming_the_tools(indexed_tools: ImageTools) -> None:
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("no_such_tool", {})
    assert caught.value.code == INVALID_PARAMS
    assert "Unknown tool 'no_such_tool'" in caught.value.message and "search_by_text" in caught.value.message


async def test_input_schemas_refuse_other_keys(indexed_tools: ImageTools) -> None:
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        listed = await client.list_tools()
    assert all(tool.input_schema["additionalProperties"] is False for tool in listed.tools)


async def test_thumbnails_are_checked_on_the_mcp_surface(indexed_tools: ImageTools) -> None:
    async with Client(create_server(indexed_tools, llm_configured=False)) as client:
        result = await client.call_tool("search_by_text", {"query": "x", "thumbnails": 11})
        status = await client.call_tool("index_status", {"thumbnails": 1})
    assert result.is_error and "'thumbnails': Input should be less than or equal to 10" in texts(result)[0]
    assert status.is_error and "'thumbnails' is not a parameter of index_status" in texts(status)[0]


async def test_add_images_reports_progress(tools: ImageTools, image_dir: Path) -> None:
    tools.engine.delay = 0.06  # type: ignore[attr-defined]  # about 0.7 s for 12 images
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with Client(create_server(tools, llm_configured=False)) as client:
        result = await client.call_tool("add_images", {"paths": [str(image_dir)]}, progress_callback=on_progress)
    assert not result.is_error and len(result.structured_content["added"]) == 12
    assert len(updates) >= 2
    assert updates[-1] == (12, 12, "encoding images")
    assert [u[0] for u in updates] == sorted(u[0] for u in updates)


async def test_an_abandoned_add_goes_on_as_a_job_and_only_cancel_job_stops_it(
    tools: ImageTools, image_dir: Path, tmp_path: Path
) -> None:
    engine = tools.engine
    engine.delay = 0.25  # type: ignore[attr-defined]  # 3 s for all 12 images
    first_progress = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    async with Client(create_server(tools, llm_configured=False)) as client:
        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool("add_images", {"paths": [str(image_dir)]}, progress_callback=on_progress)

            group.start_soon(call)
            with anyio.fail_after(5):
                await first_progress.wait()
            group.cancel_scope.cancel()  # the caller gives up (a time-out, a disconnect)
        # the job goes on to the end, and index_status shows it with its report
        assert await anyio.to_thread.run_sync(engine.add_finished.wait, 10)  # type: ignore[attr-defined]
        status = (await client.call_tool("index_status", {})).structured_content
        assert status["live"] == 12
        job = status["jobs"][-1]
        assert job["state"] == "done" and len(job["result"]["added"]) == 12 and not job["result"]["cancelled"]

        # an explicit cancel_job stops a running job at its next file, keeping what it added
        engine.add_finished.clear()  # type: ignore[attr-defined]
        more = tmp_path / "more"
        make_images(more, 8, seed=5)
        tools.sandbox = Sandbox([image_dir, more], max_file_bytes=tools.sandbox.max_file_bytes)
        started = await client.call_tool("add_images", {"paths": [str(more)], "wait": False})
        job_id = started.structured_content["job"]["id"]
        await anyio.sleep(0.3)
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
        assert await anyio.to_thread.run_sync(engine.add_finished.wait, 10)  # type: ignore[attr-defined]
        final = (await client.call_tool("index_status", {})).structured_content["jobs"][-1]
        assert cancelled["id"] == job_id and final["state"] == "cancelled" and final["result"]["cancelled"]
        assert 0 < len(final["result"]["added"]) < 8

async def test_a_2026_07_28_client_is_asked_in_an_input_required_result_before_a_removal(
    indexed_tools: ImageTools,
) -> None:
    engine = indexed_tools.engine
    ids = sorted(engine.live)[:2]  # type: ignore[attr-defined]
    arguments = {"ids": ids}

    async def unused(context, params) -> ElicitResult:
        raise AssertionError("this test answers the rounds itself")

    server = create_server(indexed_tools, llm_configured=False)
    async with Client(server, mode="2026-07-28", elicitation_callback=unused) as client:
        session = client.session

        async def retry(asked: InputRequiredResult, answer: ElicitResult, args=arguments):
            (key,) = asked.input_requests
            return await session.call_tool("remove_images", args, input_responses={key: answer},
                                           request_state=asked.request_state, allow_input_required=True)

        asked = await session.call_tool("remove_images", arguments, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult)
        (request,) = asked.input_requests.values()
        assert isinstance(request, ElicitRequest)
        assert request.params.message.startswith(f"Allow remove images from the index: remove_images({{'ids': {ids}")
        assert "Dry run: would remove 2 image(s)" in request.params.message  # the dry run's report
        assert set(ids) <= engine.live  # type: ignore[attr-defined]  # asked, not run

        declined = await retry(asked, ElicitResult(action="decline"))
        assert declined.is_error and texts(declined)[0].startswith("Not run: the person declined remove_images.")
        refused = await retry(asked, ElicitResult(action="accept", content={"confirm": False}))
        assert refused.is_error and texts(refused)[0].startswith("Not run: the person declined remove_images.")
        # an answer counts only for the call it was given about (the SDK binds the state to it)
        with pytest.raises(MCPError, match="requestState"):
            await retry(asked, ElicitResult(action="accept", content={"confirm": True}), {"ids": ids[:1]})
        assert set(ids) <= engine.live  # type: ignore[attr-defined]

        accepted = await retry(asked, ElicitResult(action="accept", content={"confirm": True}))
        assert not accepted.is_error and accepted.structured_content["removed"] == ids
        assert not set(ids) & engine.live  # type: ignore[attr-defined]


async def test_a_failed_open_is_reported_by_every_call() -> None:
    failed: Future[ImageTools] = Future()
    failed.set_exception(ModelMismatchError("This store holds ViT-B-32 embeddings; use --data-dir for another model."))
    async with Client(create_server(failed, llm_configured=False)) as client:
        assert len((await client.list_tools()).tools) == len(TOOL_NAMES)
        result = await client.call_tool("index_status", {})
    assert result.is_error and texts(result) == ["This store holds ViT-B-32 embeddings; use --data-dir for another model."]


async def test_calls_wait_for_an_engine_still_opening(indexed_tools: ImageTools) -> None:
    pending: Future[ImageTools] = Future()
    async with Client(create_server(pending, llm_configured=False)) as client:
        async with anyio.create_task_group() as group:
            results = []

            async def call() -> None:
                results.append(await client.call_tool("index_status", {}))

            group.start_soon(call)
            await anyio.sleep(0.2)
            assert not results
            pending.set_result(indexed_tools)
        assert results[0].structured_content["live"] == 12


def test_importing_the_server_loads_no_heavy_modules() -> None:
    code = (
        "import sys, img_agent.tools.mcp_server, img_agent.cli.main, img_agent.tools; img_agent.cli.main.build_parser(); "
        "heavy = [m for m in ('torch', 'open_clip', 'faiss', 'openai', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"
    print(f"import time: {time.perf_counter() - started:.2f} s")
