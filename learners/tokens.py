"""The content tokens of an item: what the content signals compare (no torch, so the sparse learner's
import stays light).

>>> from learners.base import ItemMeta
>>> tokens(ItemMeta("i1", title="Toy Story (1995)", tags=("Animation", " ")))
['toy', 'story', '1995', 'tag:animation']
"""

from __future__ import annotations

import re

from learners.base import ItemMeta

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(meta: ItemMeta) -> list[str]:
    """Title words (lower case, 2+ chars) and tags of an item."""
    words = [w for w in _WORD.findall(meta.title.lower()) if len(w) > 1]
    return words + [f"tag:{t.strip().lower()}" for t in meta.tags if t.strip()]
