"""``GET /`` and ``GET /docs``: where a newcomer (or a browser) finds the API (no key needed)."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from openheim._version import __version__
from openheim.server._http import json_response
from openheim.server._openapi import OPERATIONS
from openheim.server._schemas import Index


async def index(request: Request) -> Response:
    return json_response(Index(version=__version__))


async def docs(request: Request) -> Response:
    rows = "\n".join(
        f"<tr><td><code>{op.method.upper()}</code></td><td><code>{html.escape(op.path)}</code>"
        f"</td><td>{html.escape(op.summary)}</td><td>{'' if op.public else 'Bearer key'}</td></tr>"
        for op in OPERATIONS
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>openheim {__version__} API</title></head>
<body>
<h1>openheim {__version__}</h1>
<p>The OpenAPI 3.1 document: <a href="/openapi.json">/openapi.json</a>
(load it into any OpenAPI viewer or client generator). Routes marked <em>Bearer key</em>
need <code>Authorization: Bearer &lt;key&gt;</code>.</p>
<table>
<tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr>
{rows}
</table>
</body></html>
"""
    return HTMLResponse(page)


ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
