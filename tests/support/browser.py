"""Chromium through Playwright, and what browser tests do in it (sign in, draw on the demo
canvas, take screenshots). Debian's ``/usr/bin/chromium`` (``scripts/ensure-browser.sh``),
never a downloaded browser."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.support import ROOT
from tests.support.factories import make_user
from tests.support.waits import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
TIMEOUT_MS = 30_000


@contextmanager
def chromium(*extra_args: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A Playwright Chromium browser (a failure, not a skip, when Chromium is missing);
    ``env`` is added to the browser process's environment."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (make services does)")
    from playwright.sync_api import sync_playwright  # loads a driver: only where a browser test runs

    # Playwright's sync API keeps an asyncio loop attached to this thread, which trips Django's
    # async-safety check for the test's own (synchronous) ORM calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], env={**os.environ, **(env or {})}
            )
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def fonts_without_emoji(folder: Path) -> dict[str, str]:
    """The environment that gives Chromium only the DejaVu fonts (Debian's fonts-dejavu-core,
    always present where Chromium is): a server image's fonts, with no emoji font."""
    config = folder / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        "<dir>/usr/share/fonts/truetype/dejavu</dir>"
        f"<cachedir>{folder / 'fontcache'}</cachedir></fontconfig>"
    )
    return {"FONTCONFIG_FILE": str(config)}


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    page.screenshot(path=str(ARTIFACTS / f"{name}-{'phone' if width < 600 else 'desktop'}.png"), full_page=True)


def totp_code(user) -> str:
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.get(user=user, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def sign_in(page, base: str, username: str, password: str, *, user=None, shots: bool = False) -> None:
    page.goto(base + "/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    if shots:
        shoot(page, "sign-in")
    # allauth's field names (stable), not their labels (the identity pages word them).
    page.locator("input[name=login]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.locator("input[name=password]").press("Enter")
    if user is not None:
        page.wait_for_url(re.compile(r"/accounts/login/code/"))
        if shots:
            shoot(page, "sign-in-totp")
        page.locator("input[name=code]").fill(totp_code(user))
        page.locator("input[name=code]").press("Enter")
    page.wait_for_url(base + "/")


def make_person(username: str, role: str = "user"):
    """A user whose password the stack can check: tests hash with MD5, daphne only knows PBKDF2."""
    user = make_user(username, role)
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(f"pw-{username}", hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


def demo_round_trip(page, frame) -> None:
    """Draw a stroke on the demo canvas; it is drawn when the echo comes back over the WebSocket."""
    frame.locator("#state").filter(has_text="connected").wait_for(timeout=TIMEOUT_MS)
    box = frame.locator("canvas").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 8):
        page.mouse.move(box["x"] + 40 + step * 25, box["y"] + 40 + step * 12)
    page.mouse.up()
    wait_until(lambda: re.fullmatch(r"[0-9.]+", frame.locator("#rtt").inner_text()), timeout=10, what="echo")
