"""Request parameters as a Rails/Grape server sees them: query, form (with ``a[b]=c`` nesting
and ``a[]=x`` arrays) and JSON bodies merged into one dict."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

_KEY_RE = re.compile(r"\[([^\]]*)\]")


#: How deep parameters may nest, in JSON and in form keys (``a[b][c]``): Rails' JSON parser and
#: Rack's query parser both stop at 100 levels.
MAX_DEPTH = 100


class BadBody(ValueError):
    """The body cannot be parsed as its content type says."""


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON body that must be an object, checked before anything uses it: BadBody for
    invalid JSON, nesting deeper than :data:`MAX_DEPTH`, or text that can't be stored or
    answered (a lone surrogate such as ``"\\ud800"``)."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadBody(f"JSON body is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadBody("JSON body must be an object")
    check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """BadBody when ``data`` nests deeper than :data:`MAX_DEPTH` or holds a string that is not
    valid Unicode (a lone surrogate). Iterative, so no depth can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise BadBody(f"body is nested too deeply (more than {MAX_DEPTH} levels)")
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise BadBody(f"body is nested too deeply (more than {MAX_DEPTH} levels)")
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: Any) -> None:
    if isinstance(text, str) and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody(
                "body has text that is not valid Unicode (a lone surrogate such as \\ud800)"
            ) from None


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``[("properties[plan]", "gold"), ("tag_names[]", "a")]`` →
    ``{"properties": {"plan": "gold"}, "tag_names": ["a"]}``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + (_KEY_RE.findall("[" + rest) if rest else [])
        if len(path) > MAX_DEPTH:
            raise BadBody(f"parameter {head}[...] is nested too deeply (more than {MAX_DEPTH})")
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
    """Merge query and body parameters; body wins. Raises BadBody for an unparsable body, or
    one nested too deeply or holding invalid text (see :func:`parse_json_object`)."""
    params = nest(parse_qsl(query, keep_blank_values=True))
    if not body.strip():
        return params
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json" or (not ctype and body.lstrip()[:1] in (b"{", b"[")):
        params.update(parse_json_object(body))
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
