"""deploy/images: the session images' files, checked without building them (the browser test
tests/portal/test_desktop_image_browser.py runs the built desktop image for real).

The entry point's choices (stream secret → selkies' basic auth, GPU → encoder, the port), the
Dockerfiles (hadolint, COPY sources, names), the pins shared with requirements-dev.txt, and the
demo catalog pointing at these images.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from agent_runtime import __version__, images
from sessions_app.demo_catalog import DEMO_TEMPLATES
from tests.deploy.conftest import DEPLOY, REPO, VENV_BIN

IMAGES = DEPLOY / "images"
DESKTOP = IMAGES / "desktop"
spec = importlib.util.spec_from_file_location("streamspace_session", DESKTOP / "streamspace_session.py")
session = importlib.util.module_from_spec(spec)
spec.loader.exec_module(session)


def test_every_shipped_image_has_a_dockerfile_and_nothing_else_is_there():
    assert sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile")) == sorted(images.NAMES)


@pytest.mark.parametrize("name", images.NAMES)
def test_hadolint_is_clean(name):
    dockerfile = IMAGES / name / "Dockerfile"
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", images.NAMES)
def test_copy_sources_exist_and_apps_build_on_this_versions_desktop(name):
    text = (IMAGES / name / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _destination = line.split()
        for source in sources:
            assert (IMAGES / name / source).is_file(), f"COPY {source}: missing"
    assert f"docker build -t {images.shipped_image(name)} deploy/images/{name}" in text
    if name != "desktop":
        assert f"ARG VERSION={__version__}" in text and "FROM ghcr.io/streamspace-dev/desktop:${VERSION}" in text
        assert "USER 1000:1000" in text  # back to the session user after installing as root


def test_the_project_version_is_one():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject


def test_selkies_is_the_version_requirements_dev_pins():
    dev = re.search(r"^selkies==(\S+)", (REPO / "requirements-dev.txt").read_text(), re.M).group(1)
    image = re.search(r"^selkies==(\S+)", (DESKTOP / "requirements.txt").read_text(), re.M).group(1)
    assert image == dev


def test_the_desktop_has_the_display_tools_automation_needs():
    packages = {line for line in (DESKTOP / "packages.txt").read_text().splitlines() if line and line[0] != "#"}
    assert {"xvfb", "openbox", "xterm", "xdotool", "x11-xserver-utils", "python3-venv"} <= packages
    dockerfile = (DESKTOP / "Dockerfile").read_text()
    assert "DISPLAY=:0" in dockerfile and "USER 1000:1000" in dockerfile and f"HOME={images.HOME_PATH}" in dockerfile


def test_a_stream_secret_turns_on_basic_auth_in_selkies_only(tmp_path):
    env = {"STREAMSPACE_STREAM_SECRET": "full-s3cret", "STREAMSPACE_STREAM_VIEW_SECRET": "view-s3cret", "A": "b"}
    argv, selkies_env, _ = session.selkies_command(8080, env, dev=tmp_path)
    assert argv[:5] == ["/opt/selkies/bin/selkies", "--addr", "0.0.0.0", "--port", "8080"]
    assert "--enable-basic-auth=true" in argv and "--basic-auth-user=streamspace" in argv
    assert selkies_env["SELKIES_BASIC_AUTH_PASSWORD"] == "full-s3cret"
    assert selkies_env["SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD"] == "view-s3cret"
    assert not any("s3cret" in arg for arg in argv)  # argv is readable by every process
    assert "STREAMSPACE_STREAM_SECRET" not in selkies_env and selkies_env["A"] == "b"


def test_without_a_secret_selkies_serves_without_a_login(tmp_path):
    argv, selkies_env, _ = session.selkies_command(9000, {"STREAMSPACE_STREAM_VIEW_SECRET": "v"}, dev=tmp_path)
    assert "--enable-basic-auth=false" in argv and "--port" in argv and "9000" in argv
    assert not any(key.startswith("SELKIES_BASIC_AUTH") for key in selkies_env)


def test_the_encoder_follows_the_gpu_passed_through(tmp_path: Path):
    assert session.gpu_arguments(tmp_path) == (["--gpu-id=-1"], "software encoding (x264): no GPU passed through")
    (tmp_path / "nvidia0").touch()
    args, chosen = session.gpu_arguments(tmp_path)
    assert args == [] and "NVENC" in chosen
    (tmp_path / "dri").mkdir()
    (tmp_path / "dri" / "renderD129").touch()
    (tmp_path / "dri" / "renderD128").touch()
    args, chosen = session.gpu_arguments(tmp_path)
    assert args == [f"--encode-dri={tmp_path}/dri/renderD128"] and "VA-API" in chosen


@pytest.mark.parametrize("raw", ["0", "65536", "http", "-1"])
def test_a_bad_streaming_port_is_refused_by_name(raw):
    with pytest.raises(SystemExit, match="STREAMSPACE_STREAMING_PORT"):
        session.streaming_port({"STREAMSPACE_STREAMING_PORT": raw})
    assert session.streaming_port({}) == images.STREAMING_PORT


def test_the_demo_catalog_runs_the_shipped_images_with_their_port():
    containers = [entry for entry in DEMO_TEMPLATES if entry.get("image")]
    assert {entry["image"] for entry in containers} == {images.shipped_image(name) for name in images.NAMES}
    for entry in containers:
        assert entry["streaming_port"] == images.STREAMING_PORT and entry["platform"] == ""
        assert entry["home_path"] == images.HOME_PATH and entry["stream_auth"] and entry["read_only_root"]
        assert entry["shm_size_mb"] >= 256
    assert next(e for e in containers if e["slug"] == "firefox")["shm_size_mb"] >= 1024


def test_an_unknown_image_name_is_refused():
    with pytest.raises(ValueError, match="not a shipped image"):
        images.shipped_image("vscode")
    assert "make images" in images.missing_image_hint(images.shipped_image("firefox"))
    assert "docker pull other/app:1" in images.missing_image_hint("other/app:1")
