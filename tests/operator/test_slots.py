"""lmo.handlers.Slots: at most N reconciles at once, urgent ones (spec changes) first."""

from __future__ import annotations

import asyncio

from lmo.handlers import Slots


def test_urgent_waiters_go_first_and_cancelled_ones_give_their_turn_back():
    async def main() -> tuple[list[str], int, int]:
        slots, order, peak, running = Slots(2), [], [0], [0]

        async def job(name: str, urgent: bool, hold: float) -> None:
            async with slots.taken(urgent):
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(name)
                await asyncio.sleep(hold)
                running[0] -= 1

        tasks = [asyncio.create_task(job(f"resync{i}", False, 0.05)) for i in range(5)]
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(job("cancelled", False, 0.01))
        tasks.append(asyncio.create_task(job("spec-change", True, 0.01)))
        await asyncio.sleep(0.001)
        gone.cancel()
        await asyncio.gather(*tasks)
        return order, peak[0], slots.free

    order, peak, free = asyncio.run(main())
    assert order == ["resync0", "resync1", "spec-change", "resync2", "resync3", "resync4"]
    assert peak == 2 and free == 2


def test_a_queued_background_reconcile_is_hurried_when_its_spec_changes():
    """A resync already waiting for a slot when the object's spec changes goes first: the
    traffic change must not wait behind a thousand other resyncs."""
    async def main() -> list[str]:
        slots, order = Slots(1), []

        async def job(name: str, key: str, hold: float) -> None:
            async with slots.taken(False, key):
                order.append(name)
                await asyncio.sleep(hold)

        tasks = [asyncio.create_task(job(f"resync{i}", f"lm{i}", 0.02)) for i in range(4)]
        await asyncio.sleep(0.005)  # resync0 runs, resync1..3 wait
        slots.hurry("lm3")
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == ["resync0", "resync3", "resync1", "resync2"]
