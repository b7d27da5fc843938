"""The files endpoint's URL shapes (docs/architecture.md §23), on their own so that the
proxy's front (streamspace/front/) can recognise these requests before Django's apps are
loaded (the front is imported when the server starts, whatever application it serves)."""

from __future__ import annotations

import re

PATH_RE = re.compile(rb"^/api/v1/sessions/([^/]+)/files(?:/(.*))?$", re.S)
# A request line (or target) for this endpoint, for the front, which serves these requests
# itself so that an upload streams instead of being spooled by daphne.
REQUEST_LINE_RE = re.compile(rb" /api/v1/sessions/[^/ ?]+/files[/ ?]")
TARGET_RE = re.compile(rb"^/api/v1/sessions/[^/?]+/files(?:[/?]|$)")
