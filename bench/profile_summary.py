"""Where a request's CPU goes, from ``py-spy record --format raw`` profiles of daphne.

    .venv/bin/python bench/profile_summary.py PROFILE.txt [...]

Samples of a thread that waits (on a lock, a condition, the event loop's poll) are left
out; each other sample (one stack of a running thread) goes to the first phase of
``PHASES`` whose marker appears in its stack, so a query made while looking the user up
counts as the user lookup and not as one of the view's queries. ``LAYERS`` are inclusive
(a sample in psycopg under the user lookup counts for both "user lookup" and "psycopg").
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("JWT verification (decode, signature, claims)", ("get_validated_token", "jwt/api_jw", "jwt/algorithms")),
    ("user lookup for a JWT", ("rest_framework_simplejwt/authentication.py", "cached_user")),
    ("API token lookup", ("authenticate_key",)),
    ("portal session + user lookup", ("sessions/backends", "contrib/auth/__init__.py", "auth/middleware.py")),
    ("view: PostgreSQL round trips (psycopg)", ("psycopg",)),
    ("view: ORM (query building, SQL, rows)", ("django/db/",)),
    ("JSON rendering", ("renderers.py", "json/encoder", "orjson")),
    ("session representation (values rows -> dicts)", ("representation.py",)),
    ("logging (daphne access log, loggers)", ("logging/__init__", "serve.py:AccessLog", "AccessLog")),
    (
        "middleware",
        (
            "django/middleware/",
            "corsheaders",
            "whitenoise",
            "axes/",
            "allauth/",
            "django_prometheus",
            "sessions/middleware",
            "messages/middleware",
            "djangosaml2",
            "accounts/middleware.py",
            "api_paths.py",
        ),
    ),
    ("DRF (request, negotiation, permissions, pagination)", ("rest_framework/",)),
    ("Django (URL resolving, request and response objects)", ("django/",)),
    ("ASGI/thread hop (asgiref, executor)", ("asgiref", "concurrent/futures", "threading.py")),
    ("daphne + Twisted (HTTP parsing, writes)", ("daphne/", "twisted/")),
    ("garbage collection", ("<gc>", "gc_collect")),
]
# The innermost frame of a thread that is waiting, not running.
WAITING = ("Condition.wait", "Event.wait", "_wait_for_tstate_lock", "AsyncioSelectorReactor.run", "_worker")
LAYERS = ["psycopg", "django/db/", "rest_framework/", "asgiref", "daphne/", "twisted/", "logging/"]


def load(path: Path) -> Counter:
    stacks: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def summarise(stacks: Counter) -> str:
    total = sum(count for stack, count in stacks.items() if stack.rsplit(";", 1)[-1].split(" (", 1)[0] not in WAITING)
    total = total or 1
    phases: Counter = Counter()
    layers: Counter = Counter()
    waiting = 0
    for stack, count in stacks.items():
        if stack.rsplit(";", 1)[-1].split(" (", 1)[0] in WAITING:
            waiting += count
            continue
        phase = next((name for name, marks in PHASES if any(m in stack for m in marks)), "other (event loop, uvloop)")
        phases[phase] += count
        for layer in LAYERS:
            if layer in stack:
                layers[layer] += count
    lines = [f"{total} samples running ({waiting} waiting, left out)", "| phase | share |", "|---|---|"]
    lines += [f"| {name} | {100 * n / total:.1f} % |" for name, n in phases.most_common()]
    lines += ["", "inclusive: " + ", ".join(f"{layer} {100 * layers[layer] / total:.0f} %" for layer in LAYERS)]
    return "\n".join(lines)


def main() -> None:
    for arg in sys.argv[1:]:
        print(f"## {arg}")
        print(summarise(load(Path(arg))))
        print()


if __name__ == "__main__":
    main()
