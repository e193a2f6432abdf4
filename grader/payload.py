"""Limits on what a kernel's messages may cost the grader, enforced before decoding them.

A student's kernel chooses every byte it sends: a 900 MB display (one string referenced
100,000 times, serialised once per reference) decoded as JSON, then re-encoded, took the
grader's worker to 3.8 GB. So:

* `cap_clients` wraps the jupyter_client sessions's `unpack`: a message whose content frame
  is larger than `MAX_FRAME_BYTES`, or holds more separators than `MAX_ITEMS` could need, or
  nests deeper than the JSON parser allows, is never decoded; a small well-formed stand-in of
  the same message type takes its place and the drop is recorded;
* `bounded` checks an answer's structure (depth, item count, string lengths) before it is
  decoded into Python values; an answer past a limit is an unsupported answer, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .selfcheck import ARRAY_KEY, UNSUPPORTED_KEY

MAX_FRAME_BYTES = 64 * 2**20  # one message's content: room for the largest allowed array
MAX_ITEMS = 1_000_000  # list items plus dict entries in one message or answer
MAX_DEPTH = 32
MAX_STRING = 2**20  # a string in an answer (an array's base64 text is bounded by the frame)

DROPPED = "[grader] an output of {size:.1f} MB was dropped without being read: {why}"


@dataclass
class FrameGuard:
    """Counts what `cap_session` refused, for the run's log."""

    dropped: list[str] = field(default_factory=list)


def _stand_in(msg_type: str, text: str) -> dict[str, Any]:
    if msg_type == "stream":
        return {"name": "stderr", "text": text + "\n"}
    if msg_type == "error":
        return {"ename": "OutputTooLarge", "evalue": text, "traceback": []}
    if msg_type == "execute_reply":
        return {
            "status": "error",
            "ename": "OutputTooLarge",
            "evalue": text,
            "traceback": [],
            "execution_count": None,
        }
    if msg_type == "execute_result":
        return {"data": {"text/plain": text}, "metadata": {}, "execution_count": None}
    if msg_type in ("display_data", "update_display_data"):
        return {"data": {"text/plain": text}, "metadata": {}, "transient": {}}
    return {}


def cap_session(session: Any, guard: FrameGuard, max_bytes: int | None = None) -> None:
    """Make `session` refuse oversized or overly complex content frames before decoding.

    jupyter_client's `Session.deserialize` checks the signature, then unpacks four frames in
    order (header, parent header, metadata, content); the content frame is the one a kernel
    fills, and the only one this replaces.
    """
    deserialize: Callable[..., dict[str, Any]] = getattr(
        session.deserialize, "_grader_inner", session.deserialize
    )
    unpack: Callable[[Any], Any] = getattr(session.unpack, "_grader_inner", session.unpack)
    state: dict[str, Any] = {"frame": -1, "msg_type": ""}

    def capped_deserialize(msg_list: Any, content: bool = True, copy: bool = True) -> Any:
        state["frame"], state["msg_type"] = 0, ""
        try:
            return deserialize(msg_list, content=content, copy=copy)
        finally:
            state["frame"] = -1

    def capped_unpack(frame: Any) -> Any:
        index = state["frame"]
        if index < 0:  # not part of a message being read
            return unpack(frame)
        state["frame"] = index + 1
        if index != 3:
            value = unpack(frame)
            if index == 0 and isinstance(value, dict):
                state["msg_type"] = str(value.get("msg_type", ""))
            return value
        data = frame if isinstance(frame, bytes) else bytes(frame)
        limit = max_bytes or MAX_FRAME_BYTES
        if len(data) > limit:
            why = f"larger than the {limit / 2**20:.1f} MB a message may be"
        elif data.count(b",") + data.count(b":") > 2 * MAX_ITEMS:
            why = f"more than {MAX_ITEMS:,} items"
        else:
            try:
                return unpack(data)
            except RecursionError:
                why = "nested too deeply"
        text = DROPPED.format(size=len(data) / 2**20, why=why)
        guard.dropped.append(text)
        return _stand_in(state["msg_type"], text)

    capped_deserialize._grader_inner = deserialize  # type: ignore[attr-defined]
    capped_unpack._grader_inner = unpack  # type: ignore[attr-defined]
    session.deserialize = capped_deserialize
    session.unpack = capped_unpack


def problem(value: Any) -> str:
    """Why an answer's structure is past a limit, or "" when it is within them all."""
    items = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, dict):
            items += len(node)
            if ARRAY_KEY in node:
                continue  # decode_array checks its own size against its shape
            stack += [(k, depth + 1) for k in node]
            stack += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            items += len(node)
            stack += [(v, depth + 1) for v in node]
        elif isinstance(node, str) and len(node) > MAX_STRING:
            return f"a string of {len(node):,} characters (the limit is {MAX_STRING:,})"
        if items > MAX_ITEMS:
            return f"more than {MAX_ITEMS:,} items"
    return ""


def bounded(value: Any) -> Any:
    """The answer, or an unsupported-answer marker saying which limit it is past."""
    why = problem(value)
    return {UNSUPPORTED_KEY: f"an answer too large to grade: {why}"} if why else value


def cap_clients(km: Any, guard: FrameGuard) -> None:
    """Cap the session of every client `km` makes (a kernel manager gives each client a
    clone of its own session), and its own."""
    session = km.session
    clone: Callable[[], Any] = getattr(session.clone, "_grader_inner", session.clone)

    def capped_clone() -> Any:
        new = clone()
        cap_session(new, guard)
        return new

    capped_clone._grader_inner = clone  # type: ignore[attr-defined]
    session.clone = capped_clone
    cap_session(session, guard)
