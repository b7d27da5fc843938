#!/usr/bin/env python3
"""Container HEALTHCHECK for the control plane: GET /healthz on this container's daphne.

Django answers 400 to a Host header outside ALLOWED_HOSTS, so the probe sends the first
concrete entry of ALLOWED_HOSTS (a leading dot is a domain wildcard; "*" allows any host).
Exit status 0 = healthy, 1 = unhealthy (Docker's contract).
"""

from __future__ import annotations

import os
import sys
import urllib.request


def probe_host(allowed_hosts: str) -> str:
    for entry in allowed_hosts.split(","):
        entry = entry.strip().lstrip(".")
        if entry and entry != "*":
            return entry
    return "localhost"


def main() -> int:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Host": probe_host(os.environ.get("ALLOWED_HOSTS", ""))}
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # connection refused, timeout, HTTP error: unhealthy
        print(f"healthcheck failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
