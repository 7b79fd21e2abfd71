"""Server-Sent Events and the OpenAI stream format: which events carry tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["SSEDecoder", "is_token_chunk"]


class SSEDecoder:
    """Server-Sent Events, one line at a time: :meth:`feed` returns ``(data, time)`` per event.

    ``time`` is when the event's first ``data:`` line was read; comments (``:``) and other
    fields are skipped; several ``data:`` lines of one event are joined with newlines.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._t = math.nan

    def feed(self, line: str, t: float) -> tuple[str, float] | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            if not self._data:
                self._t = t
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> tuple[str, float] | None:
        """The pending event, if any (at a blank line or the end of the stream)."""
        if not self._data:
            return None
        event = ("\n".join(self._data), self._t)
        self._data = []
        return event


def is_token_chunk(choice: Mapping[str, Any], api: str) -> bool:
    """Whether a streamed choice carries output token(s).

    vLLM sends one chunk per engine step and every such chunk holds at least one token, even
    when its text is empty (a special token, an incomplete UTF-8 character, an EOS generated
    under ``ignore_eos``). An empty chunk is not a token when it only announces the chat role
    or only ends the stream (``finish_reason`` set, as OpenAI's own API does).
    """
    if api == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return False
        text, announce = delta.get("content"), "role" in delta
    else:
        text, announce = choice.get("text"), False
    if isinstance(text, str) and text:
        return True
    return isinstance(text, str) and not announce and choice.get("finish_reason") is None
