"""Restoring an earlier version of a document without rewriting history: one more update,
computed so that applying it to the current state gives the earlier content."""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map, Text, TransactionEvent


def restoring_update(current_state: bytes, past: Doc[Any], roots: dict[str, str]) -> bytes | None:
    """The update that turns the current content into ``past``'s, root by root (roots the
    past did not have are emptied). Rich-text formatting and nested shared types come back
    as their plain content. None when nothing differs."""
    doc: Doc[Any] = Doc()
    doc.apply_update(current_state)
    changes: list[bytes] = []
    subscription = doc.observe(lambda event: changes.append(_update_of(event)))
    try:
        with doc.transaction():
            for name in sorted(set(doc.keys()) | set(past.keys())):
                kind = roots.get(name)
                if kind == "text":
                    _restore_text(doc.get(name, type=Text), _text(past, name))
                elif kind == "map":
                    _restore_map(doc.get(name, type=Map), _map(past, name))
                elif kind == "array":
                    _restore_array(doc.get(name, type=Array), _array(past, name))
                elif kind == "xml":
                    # XML trees have no plain form to write back; they are left as they are.
                    continue
    finally:
        doc.unobserve(subscription)
    return changes[0] if changes else None


def _update_of(event: TransactionEvent) -> bytes:
    return bytes(event.update)


def _text(past: Doc[Any], name: str) -> str:
    return str(past.get(name, type=Text)) if _has(past, name) else ""


def _map(past: Doc[Any], name: str) -> dict[str, Any]:
    return dict(past.get(name, type=Map).to_py() or {}) if _has(past, name) else {}


def _array(past: Doc[Any], name: str) -> list[Any]:
    return list(past.get(name, type=Array).to_py() or []) if _has(past, name) else []


def _restore_text(text: Text, value: str) -> None:
    if str(text) == value:
        return
    # Replaced whole: pycrdt indexes text by UTF-8 bytes, so no character arithmetic here.
    text.clear()
    if value:
        text.insert(0, value)


def _restore_map(target: Map[Any], value: dict[str, Any]) -> None:
    current = target.to_py() or {}
    for key in list(current):
        if key not in value:
            del target[key]
    for key, item in value.items():
        if current.get(key) != item:
            target[key] = item


def _restore_array(target: Array[Any], value: list[Any]) -> None:
    if (target.to_py() or []) == value:
        return
    target.clear()
    target.extend(value)


def _has(doc: Doc[Any], name: str) -> bool:
    # ``name in doc`` does not look at the roots an applied update created.
    return name in set(doc.keys())
