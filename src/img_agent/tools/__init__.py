"""The tool surface: every engine operation as a tool for language models, defined once.

- :mod:`~img_agent.tools.spec`: what a tool is (the ``tool`` decorator, :class:`ToolSpec`: reflection,
  argument validation, the call, error texts).
- :mod:`~img_agent.tools.image_tools`: :class:`ImageTools` (the tools, typed), their result models and
  limits, and :data:`TOOL_SPECS`.
- :mod:`~img_agent.tools.openai_tools`: OpenAI function-calling schemas (strict) and :func:`dispatch`.
- :mod:`~img_agent.tools.mcp_server`: the MCP server (``img-agent serve``), with :mod:`~img_agent.tools.render`
  for its text and thumbnails; imported on demand.
- :mod:`~img_agent.tools.sandbox`: file access confined to allowed folders.

Example (OpenAI function calling)::

    from img_agent.tools import ImageTools, chat_completions_tools, dispatch

    tools = ImageTools(engine)                      # engine = Engine.open(settings)
    schemas = chat_completions_tools()              # pass as `tools=` to chat.completions.create
    result_json = dispatch(tools, call.function.name, call.function.arguments)
"""

from img_agent.tools.image_tools import TOOL_NAMES, TOOL_SPECS, ImageTools, get_spec
from img_agent.tools.openai_tools import chat_completions_tools, dispatch, responses_tools, strict_parameters
from img_agent.tools.sandbox import Sandbox
from img_agent.tools.spec import ToolSpec

__all__ = [
    "TOOL_NAMES",
    "TOOL_SPECS",
    "ImageTools",
    "Sandbox",
    "ToolSpec",
    "chat_completions_tools",
    "dispatch",
    "get_spec",
    "responses_tools",
    "strict_parameters",
]
