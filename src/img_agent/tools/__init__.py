"""The tool surface: every engine operation as a tool for language models, defined once.

- :mod:`~img_agent.tools.definitions`: :class:`ImageTools` (the tools, typed) and the specs derived from them.
- :mod:`~img_agent.tools.openai_tools`: OpenAI function-calling schemas (strict) and :func:`dispatch`.
- :mod:`~img_agent.tools.mcp_server`: the MCP server (``img-agent serve``); imported on demand.
- :mod:`~img_agent.tools.sandbox`: file access confined to allowed folders.

Example (OpenAI function calling)::

    from img_agent.tools import ImageTools, chat_completions_tools, dispatch

    tools = ImageTools(engine)                      # engine = Engine.open(settings)
    schemas = chat_completions_tools(tools)         # pass as `tools=` to chat.completions.create
    result_json = dispatch(tools, call.function.name, call.function.arguments)
"""

from img_agent.tools.definitions import TOOL_NAMES, TOOL_SPECS, ImageTools, ToolSpec, get_spec
from img_agent.tools.openai_tools import chat_completions_tools, dispatch, responses_tools, strict_parameters
from img_agent.tools.sandbox import Sandbox

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
