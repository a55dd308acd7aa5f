"""Docstrings to tool descriptions: the summary, and one description per parameter.

Three common styles are understood:

- Google: an ``Args:`` (or ``Arguments:`` / ``Parameters:``) section of
  ``name (type): text`` lines, continuation lines indented further;
- NumPy: a ``Parameters`` heading underlined with dashes, ``name : type``
  lines, the text indented below;
- Sphinx/reST: ``:param name: text`` or ``:param type name: text``.

The description is the text before the first section (or field list).
"""

from __future__ import annotations

import inspect
import re

__all__ = ["parse_docstring"]

_GOOGLE_PARAMS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_GOOGLE_SECTIONS = _GOOGLE_PARAMS | {
    "return",
    "returns",
    "yield",
    "yields",
    "raises",
    "example",
    "examples",
    "note",
    "notes",
    "see also",
    "attributes",
    "warning",
    "warnings",
    "todo",
    "references",
    "other parameters",
}
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$")
_SPHINX_FIELD = re.compile(r"^:\w+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """``(description, {parameter: description})`` from a docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    end = len(lines)  # where the free-text description stops
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        # NumPy: a heading line underlined by dashes.
        if (
            stripped
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) == {"-"}
            and len(lines[i + 1].strip()) >= 3
        ):
            end = min(end, i)
            heading = stripped.lower()
            i += 2
            body_start = i
            while i < len(lines) and not (
                lines[i].strip()
                and i + 1 < len(lines)
                and set(lines[i + 1].strip()) == {"-"}
                and len(lines[i + 1].strip()) >= 3
            ):
                i += 1
            if heading in ("parameters", "other parameters"):
                _numpy_items(lines[body_start:i], params)
            continue
        heading = stripped[:-1].strip().lower() if stripped.endswith(":") else ""
        if heading in _GOOGLE_SECTIONS:
            end = min(end, i)
            is_params = heading in _GOOGLE_PARAMS
            base = _indent(line)
            i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            if is_params:
                _google_items(body, params)
            continue
        if _SPHINX_FIELD.match(stripped):
            end = min(end, i)
            match = _SPHINX_PARAM.match(stripped)
            i += 1
            text = [match.group(2)] if match else []
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > 0:
                text.append(lines[i].strip())
                i += 1
            if match:
                params[match.group(1)] = " ".join(t for t in text if t)
            continue
        i += 1
    description = "\n".join(lines[:end]).strip()
    return description, params


def _google_items(body: list[str], params: dict[str, str]) -> None:
    item_indent = min((_indent(b) for b in body if b.strip()), default=0)
    name: str | None = None
    text: list[str] = []
    for raw in body:
        if raw.strip() and _indent(raw) == item_indent:
            match = _GOOGLE_ITEM.match(raw.strip())
            if match:
                if name is not None:
                    params[name] = " ".join(text)
                name, text = match.group(1), [match.group(2)] if match.group(2) else []
                continue
        if name is not None and raw.strip():
            text.append(raw.strip())
    if name is not None:
        params[name] = " ".join(text)


def _numpy_items(body: list[str], params: dict[str, str]) -> None:
    item_indent = min((_indent(b) for b in body if b.strip()), default=0)
    name: str | None = None
    text: list[str] = []
    for raw in body:
        if raw.strip() and _indent(raw) == item_indent:
            if name is not None:
                params[name] = " ".join(text)
            match = _NUMPY_ITEM.match(raw.strip())
            name, text = (match.group(1) if match else None), []
            continue
        if name is not None and raw.strip():
            text.append(raw.strip())
    if name is not None:
        params[name] = " ".join(text)
