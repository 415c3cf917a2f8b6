"""Request parameters as a Rails/Grape server sees them: query, form (with ``a[b]=c`` nesting
and ``a[]=x`` arrays) and JSON bodies merged into one dict."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

_KEY_RE = re.compile(r"\[([^\]]*)\]")


class BadBody(ValueError):
    """The body cannot be parsed as its content type says."""


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``[("properties[plan]", "gold"), ("tag_names[]", "a")]`` →
    ``{"properties": {"plan": "gold"}, "tag_names": ["a"]}``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + (_KEY_RE.findall("[" + rest) if rest else [])
        node: Any = out
        for i, part in enumerate(path):
            last = i == len(path) - 1
            nxt = None if last else path[i + 1]
            if part == "":
                if not isinstance(node, list):
                    break
                if last:
                    node.append(value)
                else:
                    node.append({})
                    node = node[-1]
                continue
            if not isinstance(node, dict):
                break
            if last:
                node[part] = value
            else:
                want: Any = [] if nxt == "" else {}
                if not isinstance(node.get(part), type(want)):
                    node[part] = want
                node = node[part]
    return out


def parse_params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    """Merge query and body parameters; body wins. Raises BadBody for unparsable JSON."""
    params = nest(parse_qsl(query, keep_blank_values=True))
    if not body.strip():
        return params
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json" or (not ctype and body.lstrip()[:1] in (b"{", b"[")):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadBody("body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadBody("JSON body must be an object")
        params.update(data)
        return params
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody("body is not UTF-8") from exc
    params.update(nest(parse_qsl(text, keep_blank_values=True)))
    return params


def as_text(value: Any) -> str | None:
    """A scalar parameter as text (None when absent, a list or a dict)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def as_bool(value: Any) -> bool | None:
    """``true``/``false`` as Rails reads them (also ``1``/``0``, bare JSON booleans)."""
    if isinstance(value, bool):
        return value
    text = as_text(value)
    if text is None or text.strip() == "":
        return None
    return text.strip().lower() in ("true", "1", "t", "yes", "y", "on")
