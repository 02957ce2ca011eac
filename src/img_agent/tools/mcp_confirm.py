"""The person's confirmation before a risky MCP tool call, asked through the SDK's resolvers.

A tool whose hints say it needs confirmation (it can remove something, or it is costly: adding,
merging, rebuilding, describing; ``ToolHints.needs_confirmation``) gets one more parameter, filled by the
SDK rather than by the model: ``Annotated[ElicitationResult[Confirmation], Resolve(ask)]``
(:mod:`mcp.server.mcpserver.resolve`). The resolver ``ask`` returns an ``Elicit`` question when the
client of the request can be asked, and the SDK carries it by the negotiated protocol:

- 2025-11-25 and older: an ``elicitation/create`` request sent to the client in the middle of the call;
- 2026-07-28 and later: the call's first answer is an ``InputRequiredResult`` holding the question;
  the client asks the person and sends the call again with the answer (``inputResponses``) and the
  sealed ``requestState``; only then does the tool body run.

The body runs only on an accepted, confirming answer; a decline or a cancel gives an ``isError``
result saying the call was not run. A question that cannot be answered (the client's callback fails,
or answers with content that does not fit :class:`Confirmation`) ends the call with the SDK's error,
and the tool does not run either. A client that declared no form elicitation, or an older-protocol
connection that cannot carry a request mid-call, is not asked: it confirms from the tool's
annotations (``destructiveHint``, ``readOnlyHint``) as its own interface does.

The question quotes the arguments and the tool's own ``dry_run`` report. On 2026-07-28 the resolver
runs again on the retried call, and an answer counts only for the question worded exactly as asked:
if the dry run reports something else by then (the index changed), the person is asked again.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from img_agent.textsafe import one_line
from img_agent.tools.spec import ToolSpec

ANSWERS_IN_RETRY_VERSION = "2026-07-28"
"""The first protocol revision whose questions ride an ``InputRequiredResult`` and the client's retry."""

CONFIRMATION_PARAMETER = "confirmation"
"""The adapter's keyword the SDK fills with the person's answer (never part of the input schema)."""

DECLINED_MESSAGE = (
    "Not run: the person declined {name}. Do not repeat the call; ask the person what they want instead."
)

PREVIEW_LINES = 12


class Confirmation(BaseModel):
    """What an elicitation asks the person before a call that needs confirmation."""

    confirm: bool = Field(True, description="Run this call.")


Preview = Callable[[ToolSpec, dict[str, Any], Context], Awaitable[str]]
"""The report of what a call would do (its ``dry_run``), or empty where the tool has none."""

Answer = ElicitationResult[Confirmation]
"""The person's answer; an accepted default :class:`Confirmation` where nobody can be asked."""


def can_be_asked(ctx: Context) -> bool:
    """Whether the client of this request declared form elicitation and the question can reach it.

    On 2026-07-28 and later a question always can (it rides the result); on older revisions only
    where the connection carries a server-to-client request in the middle of a call.
    """
    try:
        capabilities = ctx.client_capabilities
    except (AttributeError, LookupError, ValueError):  # outside a request
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False  # none, or URL mode only: a bare `elicitation: {}` means form
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, ANSWERS_IN_RETRY_VERSION):
        return True
    return bool(getattr(ctx.session, "can_send_request", False))


def question(spec: ToolSpec, arguments: dict[str, Any], preview: str) -> str:
    """The question put to the person: the call on one line, then the first lines of its preview."""
    options = {p.name for p in spec.options}
    shown = {k: v for k, v in arguments.items() if k not in options}
    message = f"Allow {spec.title.lower()}: {spec.name}({one_line(shown)[:500]})?"
    if preview:
        message += "\n" + "\n".join(one_line(line) for line in preview.splitlines()[:PREVIEW_LINES])
    return message


def confirmation_parameter(spec: ToolSpec, preview: Preview) -> inspect.Parameter:
    """The keyword-only parameter through which the SDK hands the tool the person's :data:`Answer`.

    Its resolver takes the tool's arguments by name and the request's context.
    """

    async def ask(ctx: Context, **arguments: Any) -> Elicit[Confirmation] | Confirmation:
        if not can_be_asked(ctx):
            return Confirmation()  # nobody to ask here: the client confirms from the tool's annotations
        return Elicit(question(spec, arguments, await preview(spec, arguments, ctx)), Confirmation)

    parameters = [*spec.accepted, inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    returns = Elicit[Confirmation] | Confirmation
    ask.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    ask.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    # the resolver's name keys its question and answer on the wire: one per tool, stable across servers
    ask.__name__ = ask.__qualname__ = f"confirm_{spec.name}"
    return inspect.Parameter(
        CONFIRMATION_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Answer, Resolve(ask)]
    )


def confirmed(answer: Answer) -> bool:
    """Whether the call may run: the answer is an accepted, confirming one."""
    return isinstance(answer, AcceptedElicitation) and answer.data.confirm
