"""A second stage's state inside its learner's checkpoint (`OnlineRecommender`, `SparseRecommender`).

The stage's serving weights go into the state's item-side arrays under "deep.", the rest of its
`state_dict()` into `meta["deep"]`, and what its candidate features are computed from
(`context_state()`) under "deep_context.". Loading restores whichever of them the state holds.
No torch here: the learners import it without the stage.

>>> import numpy as np
>>> class Stage:
...     def state_dict(self): return {"version": 2, "weights": {"w": np.ones(2)}}
...     def load_state_dict(self, state): self.loaded = state
...     def context_state(self): return {"count": np.zeros(3)}
...     def load_context_state(self, arrays): self.context = arrays
>>> items, meta = {}, {}
>>> save_stage(Stage(), items, meta)
>>> sorted(items), meta
(['deep.w', 'deep_context.count'], {'deep': {'version': 2}})
>>> stage = Stage()
>>> load_stage(stage, items, meta)
>>> stage.loaded["version"], stage.loaded["weights"]["w"].tolist(), sorted(stage.context)
(2, [1.0, 1.0], ['count'])
"""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHTS = "deep."  # state.items arrays of the stage's serving weights
CONTEXT = "deep_context."  # ... and of what its candidate features are computed from


def save_stage(stage: Any, items: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Add `stage`'s serving model and its features' context to a state's arrays and meta."""
    state = stage.state_dict()
    items.update({WEIGHTS + key: np.asarray(w) for key, w in state.get("weights", {}).items()})
    meta["deep"] = {key: value for key, value in state.items() if key != "weights"}
    items.update({CONTEXT + key: value for key, value in stage.context_state().items()})


def load_stage(stage: Any, items: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Restore what `save_stage` put into a state, where it is there (a state saved without a stage
    has none: the stage starts afresh)."""
    if meta.get("deep"):
        weights = {key[len(WEIGHTS):]: array for key, array in items.items() if key.startswith(WEIGHTS)}
        stage.load_state_dict({**meta["deep"], "weights": weights})
    context = {key[len(CONTEXT):]: array for key, array in items.items() if key.startswith(CONTEXT)}
    if context:
        stage.load_context_state(context)
