"""The HTML page at ``/``: the users this instance serves (the first 100), the routes, and links.

Every link is relative, so the page works as well behind jupyter-server-proxy's
``<base>/proxy/<port>/`` as at ``http://127.0.0.1:<port>/``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from .service import UserService

__all__ = ["index_page"]

_INDEX_USERS = 100

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kafka-crud: users from {topic}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}code{{background:#f4f4f4}}</style></head>
<body><h1>Users from the compacted topic <code>{topic}</code></h1>
<p id="status">{status}</p>
<table id="users"><tr><th>email</th><th>name</th><th>ETag (partition-offset)</th></tr>
{rows}</table>{more}
<h2>Routes</h2><ul>
<li><a href="users">GET users</a>: every user, as JSON</li>
<li>GET user?email=E: one user; PUT user with a JSON body creates or updates; DELETE user?email=E writes a
tombstone</li>
<li><a href="readyz">GET readyz</a>: 200 once caught up with the topic, 503 before;
<a href="healthz">GET healthz</a>: 200 while serving</li>
<li><a href="groupinfo">GET groupinfo</a>: which instance serves which partition</li>
<li><a href="openapi.json">GET openapi.json</a>: every route, header and status, as OpenAPI 3.1</li></ul>
<p id="here"></p>
<script>document.getElementById("here").textContent = "This page: " + location.href
  + (location.pathname.includes("/proxy/") ? ", through Jupyter's proxy" : "")</script>
</body></html>
"""


def index_page(service: UserService) -> str:
    """The HTML page at ``/``: the users (the first 100), the routes, relative links only."""
    users = service.users() if service.ready else []
    rows = "\n".join(
        f'<tr><td><a href="user?email={quote(s.user.email, safe="@")}">{html.escape(s.user.email)}</a></td>'
        f"<td>{html.escape(s.user.name)}</td><td>{html.escape(s.position.etag)}</td></tr>"
        for s in users[:_INDEX_USERS]
    )
    more = (f'<p>and {len(users) - _INDEX_USERS} more: <a href="users">GET users</a></p>'
            if len(users) > _INDEX_USERS else "")
    progress = service.progress()
    count = f"{len(users)} user" + ("" if len(users) == 1 else "s")
    status = (count if service.ready or progress is None
              else f"Rebuilding from the topic: {progress.applied} of {progress.total} offsets (reload)")
    return _PAGE.format(topic=html.escape(service.topic), status=status, rows=rows, more=more)
