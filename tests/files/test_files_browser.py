"""Files in a session's home end to end: daphne, a real local agent process, Chromium.

alice drops a 50 MiB file onto the viewer page, watches its progress bar, and downloads it
back from the file browser with the same SHA-256; through the API, a link in her home that
points out of it is refused, a hibernated session answers 409, and the file can be deleted.
"""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from agent_runtime.backends.homes import home_key
from sessions_app.models import Session, SessionState, Template
from streamspace.accounts.models import TokenScope
from streamspace.accounts.tokens import create_token
from tests.support.browser import TIMEOUT_MS, chromium, make_person, shoot, sign_in
from tests.support.stack import make_agent
from tests.support.waits import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
SIZE = 50 * MIB

# Builds a 50 MiB file in the page (a fixed byte pattern salted by a random block), hashes it
# with WebCrypto, and hands it to the drop zone inside a DataTransfer, as a drag would.
DROP = """async (size) => {
  const block = new Uint8Array(1024 * 1024);
  crypto.getRandomValues(block.subarray(0, 65536));
  for (let i = 65536; i < block.length; i++) block[i] = (i * 31 + block[i % 65536]) & 255;
  const parts = [];
  for (let i = 0; i < size / block.length; i++) { block[0] = i; parts.push(block.slice()); }
  const file = new File(parts, "big.bin", {type: "application/octet-stream"});
  const small = new File(["hello from the drop\\n"], "note.txt", {type: "text/plain"});
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  const data = new DataTransfer();
  data.items.add(file);
  data.items.add(small);
  const zone = document.querySelector("[data-drop-overlay]");
  document.dispatchEvent(new DragEvent("dragenter", {dataTransfer: data, bubbles: true}));
  zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
  zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
  return Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def test_upload_by_drop_and_download_back(stack, tmp_path):
    alice = make_person("alice")
    agent, token = make_agent("local-files", "local")
    Template.objects.create(
        slug="demo-canvas",
        display_name="Demo canvas",
        platform="local",
        command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"],
        default_cpu_millicores=250,
        default_memory_mb=128,
    )
    stack.start_agent(agent, token, "local-files-a")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="leader")
    _, key = create_token(alice, name="files-e2e", scope=TokenScope.WRITE)
    api = httpx.Client(base_url=stack.base, timeout=60, headers={"Authorization": f"Token {key}"})
    launched = api.post("/api/v1/sessions", json={"template": "demo-canvas", "persistent_home": True})
    assert launched.status_code == 202, launched.text
    session_id = launched.json()["id"]
    wait_until(lambda: Session.objects.get(pk=session_id).state == SessionState.RUNNING, timeout=60, what="running")
    home = tmp_path / "agent-local-files-a" / "homes" / home_key("alice")
    assert home.is_dir()

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1366, "height": 860}, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        sign_in(page, stack.base, "alice", "pw-alice")
        page.goto(f"{stack.base}/sessions/{session_id}/view")
        page.get_by_role("button", name="Files").click()
        page.locator("[data-files][data-loaded='/']").wait_for()
        sent_sha = page.evaluate(DROP, SIZE)
        big = page.locator("[data-upload='big.bin']")
        big.locator("progress").wait_for()
        shoot(page, "files-uploading")
        big.and_(page.locator("[data-state='done']")).wait_for(timeout=120_000)
        assert float(big.locator("progress").get_attribute("max") or 0) >= SIZE
        page.locator("[data-upload='note.txt'][data-state='done']").wait_for()
        page.get_by_role("link", name="Download big.bin").wait_for()
        shoot(page, "files-uploaded")
        with page.expect_download(timeout=120_000) as download_info:
            page.get_by_role("link", name="Download big.bin").click()
        downloaded = download_info.value.path()
        got_sha = hashlib.sha256(open(downloaded, "rb").read()).hexdigest()  # noqa: SIM115 a test file
        assert got_sha == sent_sha
        assert hashlib.sha256((home / "big.bin").read_bytes()).hexdigest() == sent_sha
        assert (home / "note.txt").read_text() == "hello from the drop\n"

        # A file over the limit is refused in the page, with the reason.
        page.evaluate(
            """() => { const data = new DataTransfer();
                 data.items.add(new File([new Uint8Array(65 * 1024 * 1024)], "huge.bin"));
                 document.querySelector("[data-dropzone]").dispatchEvent(
                   new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true})); }"""
        )
        failed = page.locator("[data-upload='huge.bin'][data-state='failed']")
        failed.wait_for()
        assert "too large" in failed.inner_text()
        shoot(page, "files-too-large")
        context.close()

    # The API: a link out of the home is refused; listing, deleting; a hibernated session is 409.
    os.symlink("/etc", home / "etc-link")
    os.symlink("/etc/hostname", home / "hostname-link")
    base = f"/api/v1/sessions/{session_id}/files"
    assert api.get(f"{base}/etc-link/passwd").json()["code"] == "path_outside_home"
    assert api.get(f"{base}/hostname-link").status_code == 403
    assert api.put(f"{base}/etc-link/planted", content=b"x").status_code == 403
    assert api.get(f"{base}/..%2f..%2fetc/passwd").status_code == 400
    assert api.get(f"{base}/missing.txt").status_code == 404
    assert api.put(f"{base}/", content=b"x").status_code == 409
    names = {e["name"]: e["type"] for e in api.get(f"{base}/").json()["entries"]}
    assert names["big.bin"] == "file" and names["etc-link"] == "link"
    assert api.delete(f"{base}/big.bin").status_code == 204
    assert not (home / "big.bin").exists()
    assert api.post(f"/api/v1/sessions/{session_id}/hibernate").status_code in (200, 202)
    wait_until(lambda: Session.objects.get(pk=session_id).state == SessionState.HIBERNATED, timeout=30, what="hib")
    refused = api.get(f"{base}/")
    assert (refused.status_code, refused.json()["code"]) == (409, "session_not_running")
    assert "wake" in refused.json()["detail"]
