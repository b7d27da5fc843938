"""The API's JSON renderer: DRF's ``JSONRenderer`` output, serialised by orjson.

A page of sessions is tens of kilobytes of JSON; orjson writes it in a fraction of the CPU
the standard library's encoder takes. The bytes are DRF's own, because every value orjson
would write differently goes through DRF's encoder or DRF's renderer:

* datetimes (DRF writes ``Z`` and milliseconds) pass through to DRF's
  ``JSONEncoder.default``, as do Decimals, lazy strings, querysets and everything else
  orjson does not know;
* what orjson refuses (integers beyond 64 bits, dict keys that are not strings) and
  anything asked to be indented (``Accept: application/json; indent=4``) is rendered by
  DRF's renderer itself;
* a float below 1e-4 or in exponent form, where orjson and Python write numbers
  differently (``0.00001`` and ``1e-7`` against ``1e-05`` and ``1e-07``), sends the whole
  response through DRF's renderer, so numbers read the same to the byte;
* U+2028 and U+2029 are escaped, as DRF escapes them (JSON that is also JavaScript).

One difference remains: a NaN or infinite float, which DRF refuses with an error (its
``STRICT_JSON``), is written as ``null``. The API never returns one.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

_DRF_DEFAULT = JSONEncoder().default
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_NUMBER_START = frozenset(b":,[")
_NUMBER_CHARACTERS = frozenset(b"0123456789.-+eE")


def _floats_written_differently(out: bytes) -> bool:
    """Whether ``out`` holds a float whose text Python's encoder writes differently.

    Only floats below 1e-4 differ (``0.00001`` or ``1e-7``, Python's ``1e-05`` and ``1e-07``;
    large ones read ``1e+16`` in both): their text contains ``e-`` or starts ``0.0000``. Each such spot counts only inside a number token, one that starts after
    ``:``, ``,`` or ``[`` (a string that merely looks like one sends its response down DRF's
    slower path, which is still exact).
    """
    for marker in (b"e-", b"0.0000"):
        at = out.find(marker)
        while at != -1:
            start = at
            while start > 0 and out[start - 1] in _NUMBER_CHARACTERS:
                start -= 1
            token_ok = start > 0 and out[start - 1] in _NUMBER_START and out[start] != ord("e")
            if token_ok and (marker != b"0.0000" or out[start:at].lstrip(b"-") == b""):
                return True
            at = out.find(marker, at + 1)
    return False


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON renderer, same bytes, serialised with orjson."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        if (
            self.ensure_ascii
            or not self.compact
            or self.get_indent(accepted_media_type, renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_DRF_DEFAULT, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return super().render(data, accepted_media_type, renderer_context)
        if _floats_written_differently(out):
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80" in out:  # the first two bytes of U+2028 and U+2029 in UTF-8
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out
