"""Where a stuck worker is stuck: the stacks of its asyncio tasks and of its threads, as text for the log.

>>> import asyncio
>>> async def main():
...     return "in main" in task_stacks()
>>> asyncio.run(main())
True
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback


def task_stacks(limit: int = 20) -> str:
    """Every pending asyncio task of the running loop (its await chain) and every thread."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=limit, file=out)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame, limit=limit))}")
    return out.getvalue()
