"""Request fields of several forms as tagged unions: text-or-list (a run's `input`, a chat
message's `content`), and an agent spec's tools (a built-in's name or a tenant tool object).

A plain `str | list[...]` union reports a failure of each member, and the first one (`input:
string_type`) names the form the client did not send. Tagged by the form of the value, an
error names only the member that applies (`input: at most 256 items`). Pydantic puts the tag
in the error's location: the error handler leaves tags (`<…>`) out of `param` (`is_tag`).
"""

from __future__ import annotations

from typing import Any

TEXT = "<text>"
LIST = "<list>"


def text_or_list(value: Any) -> str:
    """The discriminator: the list member for a list, the text member for anything else."""
    return LIST if isinstance(value, list) else TEXT


def is_tag(part: Any) -> bool:
    """True for a location part that is a tag of these unions (`<text>`, `<list>`, …)."""
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")
