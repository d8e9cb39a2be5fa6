"""``Plain``: a ``Static`` that never interprets markup.

Text on the kiosk comes from the bus (a clerk's message, an item name, a reason): ``[b]`` or a stray
``[/]`` in it must be shown as typed, not parsed (a parse error would take the screen down).
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Static


class Plain(Static):
    def __init__(self, content: Any = "", **kwargs: Any) -> None:
        super().__init__(content, markup=False, **kwargs)
