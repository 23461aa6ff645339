"""`fresh`: a new, untrained copy of a signal, made from the hyper-parameters it stores.

Signals keep each constructor argument under the argument's name (the river convention), so a learner
that was handed a configured signal can start it afresh, e.g. before loading a checkpoint into it
(river's `Base.clone` does the same; `learners/` does not import river eagerly).

>>> from learners.popularity import DecayedCounts
>>> counts = DecayedCounts(half_life=50.0, unit="seconds")
>>> counts.n_events = 7
>>> copy = fresh(counts)
>>> copy is counts, copy.half_life, copy.unit, copy.n_events
(False, 50.0, 'seconds', 0)
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

T = TypeVar("T")


def fresh(signal: T) -> T:
    """A new instance of `signal`'s class built with the hyper-parameters `signal` stores."""
    cls: Any = type(signal)
    params = inspect.signature(cls).parameters.values()
    kwargs = {p.name: getattr(signal, p.name) for p in params
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return cls(**kwargs)
