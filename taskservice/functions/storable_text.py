"""Replacement of text that PostgreSQL text and jsonb cannot store, in results and log lines.

PostgreSQL rejects the NUL character and lone UTF-16 surrogates (code points
U+D800 to U+DFFF in a Python str). The service replaces each of them with
U+FFFD wherever it appears in a result or a log line. orjson refuses to encode
lone surrogates, so results that contain them are cleaned only after orjson
raises, and results without them cost one extra byte search for NUL.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

REPLACEMENT = "\ufffd"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# orjson writes NUL as the escape \u0000. The lookbehind skips an escaped
# backslash followed by the letters "u0000", which is ordinary text.
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_JSON_REPLACEMENT = rb"\1" + REPLACEMENT.encode("utf-8")

# orjson rejects nesting deeper than 255 levels, so the cleaning walk stops
# there and leaves the rejection to orjson.
_MAX_DEPTH = 256


def make_storable(text: str) -> str:
    """Return ``text`` with each NUL and lone surrogate replaced by U+FFFD."""
    if text.isascii():
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def dumps_storable(value: Any) -> bytes:
    """Encode ``value`` with orjson, replacing NUL and lone surrogates in strings and dict keys with U+FFFD.

    Raises orjson.JSONEncodeError for values that orjson cannot encode for
    other reasons, such as sets, objects or dict keys that are not strings.
    """
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        encoded = orjson.dumps(_clean_value(value, 0))
    if b"\\u0000" in encoded:
        encoded = _JSON_NUL.sub(_JSON_REPLACEMENT, encoded)
    return encoded


def _clean_value(value: Any, depth: int) -> Any:
    """Return a copy of ``value`` with lone surrogates replaced in its str, list, tuple and dict parts.

    Other types are returned unchanged. Dict keys that become equal keep the
    value of the last one.
    """
    # NOTE: strings inside types that orjson encodes natively but this walk
    # does not enter, such as dataclasses and enums, keep their surrogates, so
    # such a result still fails with Runtime.InvalidResult.
    if isinstance(value, str):
        return make_storable(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            make_storable(key) if isinstance(key, str) else key: _clean_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_clean_value(item, depth + 1) for item in value]
    return value
