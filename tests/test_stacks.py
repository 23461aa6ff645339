"""A rebalance step that waits long for the batch in flight logs every task's stack, then still waits."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from stream import app


def test_a_long_wait_for_the_batch_lock_logs_the_stacks_and_keeps_the_lock_order(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(app, "REBALANCE_WAIT_WARN_S", 0.05)
    order = []

    async def main() -> None:
        owner = SimpleNamespace(_batch_lock=asyncio.Lock())

        async def batch_in_flight() -> None:
            async with owner._batch_lock:
                await asyncio.sleep(0.2)  # a slow batch: the step must wait for it, not cut in
                order.append("batch")

        task = asyncio.create_task(batch_in_flight(), name="the-batch")
        await asyncio.sleep(0.01)
        async with app.EventConsumer.rebalance_lock(owner, "revocation"):
            order.append("revocation")
        await task
        assert not owner._batch_lock.locked()

    with caplog.at_level(logging.WARNING, logger="streamrec.app"):
        asyncio.run(main())
    assert order == ["batch", "revocation"]
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "revocation has waited" in warning and "the-batch" in warning and "batch_in_flight" in warning
