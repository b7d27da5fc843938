"""Answers the proxy gives itself: error pages, the "waking up" page and its status JSON.

Browsers (``Accept: text/html``) get a small self-contained page; every other client gets
the API's error shape ``{"code", "detail"}``. Every answer carries the isolation headers of
where it is served (:class:`Framing`); on a session's origin framed by the portal, an HTML
page also tells the portal's viewer what happened (``postMessage`` to that origin only:
``{"type": "streamspace.proxy", "status", "code"}``), since the viewer cannot look into a
frame of another origin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

from sessions_app.proxy.rewrite import header_value, isolation_headers


@dataclass(frozen=True)
class Framing:
    """Where the proxy answers: a session's own origin (framed by ``portal_origin``, "" when
    unknown) or the portal's prefix."""

    on_session_host: bool = False
    portal_origin: str = ""

    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return isolation_headers(on_session_host=self.on_session_host, portal_origin=self.portal_origin)

    @property
    def reports_to(self) -> str:
        """The portal origin a page may report to (only on a session origin, only a valid one)."""
        if not self.on_session_host:
            return ""
        policy = self.headers()[0][1]
        return self.portal_origin if policy != b"frame-ancestors 'none'" else ""

    def portal_link(self) -> str:
        """Where "Portal" leads: ``/`` on the portal's origin, the portal's origin from a session's."""
        if not self.on_session_host:
            return "/"
        return self.reports_to + "/" if self.reports_to else ""


PREFIX_FRAMING = Framing()


def report_script(framing: Framing, status: int, code: str) -> str:
    """A script telling the framing portal page about this answer ("" when there is none to tell)."""
    target = framing.reports_to
    if not target:
        return ""
    # Both values are ours: a fixed code and an origin checked by isolation_headers' pattern.
    message = json.dumps({"type": "streamspace.proxy", "status": status, "code": code})
    return f"if (window.parent !== window) window.parent.postMessage({message}, {json.dumps(target)});"


_STYLE = (
    "body{margin:0;min-height:100vh;display:grid;place-items:center;background:#0f172a;color:#e2e8f0;"
    "font:16px/1.5 system-ui,sans-serif}main{max-width:32rem;padding:2rem;text-align:center}"
    "h1{font-size:1.4rem;margin:.5rem 0}p{color:#94a3b8}a{color:#38bdf8}"
    ".spin{width:2.5rem;height:2.5rem;margin:auto;border:.3rem solid #334155;border-top-color:#38bdf8;"
    "border-radius:50%;animation:s 1s linear infinite}@keyframes s{to{transform:rotate(360deg)}}"
)
_TITLES = {
    400: "Bad request",
    401: "Sign in to view this session",
    403: "You cannot view this session",
    404: "Session not found",
    408: "Request timed out",
    410: "This session has ended",
    502: "The session is not answering",
    503: "The session is not ready",
    504: "The session took too long to answer",
}

_WAKING_SCRIPT = """
const statusUrl = %(status_url)s;
const label = document.getElementById("state");
async function poll() {
  try {
    const r = await fetch(statusUrl, {credentials: "same-origin", cache: "no-store"});
    if (r.ok) {
      const s = await r.json();
      label.textContent = s.status_message || s.state;
      if (s.ready) { location.reload(); return; }
      if (["stopped", "stopping", "failed"].includes(s.state)) { label.textContent = "The session " + s.state + "."; return; }
    } else if (r.status >= 400 && r.status < 500) { label.textContent = "You no longer have access."; return; }
  } catch (e) { /* the control plane may be restarting: keep polling */ }
  setTimeout(poll, 1000);
}
setTimeout(poll, 500);
"""


def wants_html(scope: dict) -> bool:
    accept = header_value(scope.get("headers") or [], b"accept") or b""
    return b"text/html" in accept


def _html_page(title: str, body: str, *, script: str = "") -> bytes:
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · StreamSpace</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{script_tag}</body></html>"
    ).encode()


async def respond(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def error(
    scope: dict,
    send: Any,
    status: int,
    code: str,
    detail: str,
    extra_headers: list | None = None,
    *,
    framing: Framing = PREFIX_FRAMING,
) -> None:
    """An error in the shape the client understands (HTML page or JSON)."""
    head = scope.get("method") == "HEAD"
    headers = [*framing.headers(), *(extra_headers or [])]
    if wants_html(scope):
        title = _TITLES.get(status, "Error")
        link = framing.portal_link()
        back = f"<p><a href='{escape(link)}' target='_top'>Portal</a></p>" if link else ""
        body = _html_page(
            title, f"<h1>{escape(title)}</h1><p>{escape(detail)}</p>{back}", script=report_script(framing, status, code)
        )
        await respond(send, status, body, b"text/html; charset=utf-8", headers, head=head)
    else:
        body = json.dumps({"code": code, "detail": detail}).encode()
        await respond(send, status, body, b"application/json", headers, head=head)


async def redirect(
    send: Any, location: str, set_cookie: str | None = None, *, framing: Framing = PREFIX_FRAMING
) -> None:
    headers = [*framing.headers(), (b"location", location.encode("ascii"))]
    if set_cookie:
        headers.append((b"set-cookie", set_cookie.encode("ascii")))
    await respond(send, 303, b"", b"text/plain", headers)


async def waking(
    scope: dict, send: Any, *, prefix: str, state: str, message: str, framing: Framing = PREFIX_FRAMING
) -> None:
    """The session is starting or waking: a page that follows progress, or 503 + Retry-After."""
    retry = [*framing.headers(), (b"retry-after", b"5")]
    if not wants_html(scope):
        body = json.dumps({"code": "session_starting", "detail": message or f"The session is {state}.", "state": state})
        await respond(send, 503, body.encode(), b"application/json", retry, head=scope.get("method") == "HEAD")
        return
    script = _WAKING_SCRIPT % {"status_url": json.dumps(prefix + "/.streamspace/status")}
    body = _html_page(
        "Waking up",
        '<div class="spin" role="progressbar" aria-label="starting"></div>'
        f"<h1>Your session is waking up</h1><p id='state'>{escape(message or state)}</p>"
        "<p>This page reloads by itself when the session is ready.</p>",
        script=script,
    )
    await respond(send, 503, body, b"text/html; charset=utf-8", retry, head=scope.get("method") == "HEAD")


async def status_json(send: Any, *, state: str, ready: bool, message: str, framing: Framing = PREFIX_FRAMING) -> None:
    body = json.dumps({"state": state, "ready": ready, "status_message": message}).encode()
    await respond(send, 200, body, b"application/json", framing.headers())
