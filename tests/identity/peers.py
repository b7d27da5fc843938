"""Helpers to run real identity peers on loopback and to act like a browser against them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

from tests.support.ci import unavailable
from tests.support.ports import free_port

OIDC_DIR = Path(__file__).parent / "oidc"


def require(condition: bool, message: str) -> None:
    """A missing peer is a skip locally (run scripts/ensure-test-peers.sh) and a failure in CI."""
    if condition:
        return
    unavailable(message + " (scripts/ensure-test-peers.sh installs it; `make services` runs that)")


def start_oidc_provider(redirect_uri: str) -> tuple[subprocess.Popen, str]:
    """Start tests/identity/oidc/provider.mjs; returns the process and its issuer URL."""
    require(shutil.which("node") is not None, "node is not installed")
    require((OIDC_DIR / "node_modules" / "oidc-provider").is_dir(), "the test OpenID Provider is not installed")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIRECT_URI": redirect_uri}
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs")],
        cwd=OIDC_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 20
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY "):
            return process, line.split(" ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the OpenID Provider did not start")


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=(a.get("method") or "get").lower()))
        elif tag in ("input", "button", "textarea") and self.forms and a.get("name"):
            if a.get("type") in ("submit", "button") and tag != "input":
                return
            self.forms[-1].fields.setdefault(a["name"], a.get("value", ""))


def forms_in(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def submit(client: httpx.Client, page: httpx.Response, values: dict[str, str], *, index: int = 0) -> httpx.Response:
    """Fill and submit the ``index``-th form of ``page`` like a browser would."""
    form = forms_in(page.text)[index]
    data = {**form.fields, **values}
    url = urljoin(str(page.url), form.action or str(page.url))
    if form.method == "post":
        return client.post(url, data=data)
    return client.get(url, params=data)


def follow_until(client: httpx.Client, response: httpx.Response, prefix: str, max_hops: int = 20) -> httpx.Response:
    """Follow redirects by hand and stop *before* requesting a URL that starts with ``prefix``.

    Returns the redirect response whose ``Location`` points there (the test then decides
    what to send), or the final response if no redirect went there.
    """
    for _ in range(max_hops):
        if not response.is_redirect:
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(prefix):
            return response
        response = client.get(location)
    raise AssertionError("too many redirects")
