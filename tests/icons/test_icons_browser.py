"""The demo catalog in Chromium with no emoji font (a server image's fonts): every shipped
template shows a real picture, and a template without one shows a readable text badge."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from PIL import Image

from sessions_app.demo_catalog import DEMO_TEMPLATES
from sessions_app.models import Template
from tests.support.browser import chromium, fonts_without_emoji, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(tmp_path) -> Iterator:
    with chromium(env=fonts_without_emoji(tmp_path)) as instance:
        yield instance


def test_the_browser_gets_no_emoji_font(tmp_path):
    env = {**os.environ, **fonts_without_emoji(tmp_path)}
    fonts = subprocess.run(["fc-list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "DejaVuSans.ttf" in fonts and "emoji" not in fonts.lower()


def test_catalog_icons_render_without_an_emoji_font(browser, live_server, alice):
    call_command("seed_demo", verbosity=0)
    Template.objects.create(slug="made-here", display_name="Team notes", icon="📝", image="registry.local/notes:1")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, live_server.url, "alice", "pw-alice")
    for entry in DEMO_TEMPLATES:
        card = page.locator(f'[data-template="{entry["slug"]}"]')
        picture = card.locator(".card__icon img")
        picture.wait_for()
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0"), entry["slug"]
        pixels = picture.screenshot()
        assert len(set(_colours(pixels))) > 2, f"{entry['slug']}'s icon is blank"
    badge = page.locator('[data-template="made-here"] [data-icon-label]')
    assert badge.locator(".icon__label").inner_text() == "TN"
    box = badge.locator(".icon__label").bounding_box()
    assert box["width"] > 8 and box["height"] > 8
    shoot(page, "catalog-icons-no-emoji-font")


def _colours(png: bytes) -> list[tuple[int, ...]]:
    with Image.open(io.BytesIO(png)) as image:
        return list(image.convert("RGB").getdata())
