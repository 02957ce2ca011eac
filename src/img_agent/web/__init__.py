"""The web side of a store's service: the REST API (``/api``), the gallery page and ``/mcp`` over HTTP."""
