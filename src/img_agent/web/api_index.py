"""The store: status, adding and removing, merge and rebuild, jobs and their events, the tools.

Adding a folder and rebuilding run as jobs (answered at once with the job); follow one at
``/api/jobs/{id}/events`` and stop it at ``/api/jobs/{id}/cancel``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from img_agent.results import IndexStatus, JobInfo, MaintenanceReport, RemoveReport
from img_agent.tools.image_tools import get_spec
from img_agent.tools.openai_tools import chat_completions_tools
from img_agent.version import __version__
from img_agent.web.deps import Deps, call_tool
from img_agent.web.events import job_events
from img_agent.web.models import JobStarted, LLMInfo, ToolCall, WebStatus

router = APIRouter()

AddArguments = get_spec("add_images").arguments_model()
RemoveArguments = get_spec("remove_images").arguments_model()
RebuildArguments = get_spec("rebuild_index").arguments_model()


@router.get("/api/status", tags=["store"])
def status(deps: Deps) -> WebStatus:
    """The index, the CLIP model's state, the LLM, the allowed folders."""
    tools = deps.tools()
    return WebStatus(index=call_tool(tools, "index_status", {}), model=deps.model(),
                     llm=LLMInfo(configured=tools.llm is not None, model=deps.llm_model),
                     roots=[str(root) for root in tools.sandbox.roots], read_only=tools.engine.read_only,
                     version=__version__)


@router.get("/api/index/status", tags=["store"])
def index_status(deps: Deps) -> IndexStatus:
    return call_tool(deps.tools(), "index_status", {})


@router.post("/api/index/add", tags=["store"])
def index_add(body: AddArguments, deps: Deps) -> JobStarted:  # type: ignore[valid-type]
    """Index files and folders (inside the allowed folders) as a job; answers at once."""
    report = call_tool(deps.tools(), "add_images", {**body.model_dump(), "wait": False})
    return JobStarted(job=report.job)


@router.post("/api/index/remove", tags=["store"])
def index_remove(body: RemoveArguments, deps: Deps) -> RemoveReport:  # type: ignore[valid-type]
    """Remove images by id and/or path (``dry_run``: only list them)."""
    return call_tool(deps.tools(), "remove_images", body.model_dump())


@router.post("/api/index/merge", tags=["store"])
def index_merge(deps: Deps) -> MaintenanceReport:
    """Move recently added images into the main index."""
    return call_tool(deps.tools(), "merge_buffer", {})


@router.post("/api/index/rebuild", tags=["store"])
def index_rebuild(deps: Deps, body: RebuildArguments | None = None) -> JobStarted:  # type: ignore[valid-type]
    """Retrain and rebuild the main index, as a job; answers at once. Cancelling it before the new index is
    published discards that index: the old one stays."""
    tools = deps.tools()
    spec = get_spec("rebuild_index")
    parsed = spec.parse(body.model_dump() if body is not None else {})
    tools.engine.check_index_string(parsed["index_string"])  # a bad one is refused here, not by a failed job
    job_id = tools.jobs.start("rebuild", f"rebuild {parsed['index_string'] or 'auto'}",
                              lambda progress, cancel: spec.call(tools, parsed, progress=progress, cancel=cancel))
    return JobStarted(job=tools.jobs.info(job_id))


@router.get("/api/jobs", tags=["jobs"])
def jobs(deps: Deps) -> list[JobInfo]:
    return deps.tools().jobs.list()


@router.get("/api/jobs/{job_id}", tags=["jobs"])
def job(job_id: str, deps: Deps) -> JobInfo:
    return deps.tools().jobs.info(job_id)


@router.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: str, deps: Deps) -> JobInfo:
    """Stop a job at its next batch; what it finished stays."""
    return deps.tools().jobs.cancel(job_id)


@router.get("/api/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def job_stream(job_id: str, deps: Deps) -> StreamingResponse:
    """Server-sent events: ``progress`` (data: JobInfo) as the job moves, then ``done``."""
    registry = deps.tools().jobs
    registry.info(job_id)  # an unknown job is a 404 before the stream starts
    return StreamingResponse(job_events(registry, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/api/tools", tags=["tools"])
def tools_list() -> list[dict[str, Any]]:
    """The tools as OpenAI Chat Completions function tools (strict schemas)."""
    return chat_completions_tools()


@router.post("/api/tools/call", tags=["tools"])
def tools_call(body: ToolCall, deps: Deps) -> dict[str, Any]:
    """Call one tool by name; the result is the tool's result model as JSON."""
    return call_tool(deps.tools(), body.name, body.arguments).model_dump(mode="json")
