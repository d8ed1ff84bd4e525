"""The decode thread -> event loop hand-off (worker/jobs.py), with a real event loop and a real
producer thread: no piece is lost or reordered, and the wake-ups of many streams that get a token
together are folded into one (WRK-080)."""

from __future__ import annotations

import asyncio
import threading

from worker.jobs import TokenChannel, doorbell

STREAMS = 16
STEPS = 200


def test_wrk080_every_piece_arrives_in_order_and_one_step_wakes_the_loop_once() -> None:
    async def main() -> tuple[list[list[str]], int]:
        loop = asyncio.get_running_loop()
        channels = [TokenChannel(loop, coalesce_s=0.0) for _ in range(STREAMS)]
        step_done = [threading.Event() for _ in range(STEPS)]

        def decode_thread() -> None:  # as StepLoop: one token for every stream per step
            for s in range(STEPS):
                for c, ch in enumerate(channels):
                    ch.token(f"{c}:{s}")
                step_done[s].wait(5)  # the next step comes once the loop has taken this one
            for ch in channels:
                ch.close()

        async def consume(i: int, ch: TokenChannel) -> list[str]:
            got: list[str] = []
            while pieces := await ch.drain():
                got += pieces
                if i == 0:
                    step_done[len(got) - 1].set()
            return got

        rings0 = doorbell(loop).rings
        thread = threading.Thread(target=decode_thread)
        thread.start()
        results = await asyncio.gather(*(consume(i, ch) for i, ch in enumerate(channels)))
        await asyncio.to_thread(thread.join)
        return list(results), doorbell(loop).rings - rings0

    results, rings = asyncio.run(main())
    for c, got in enumerate(results):
        assert got == [f"{c}:{s}" for s in range(STEPS)]
    # Per-channel wake-ups would be STREAMS per step; folded, about one per step (a step's
    # tokens may straddle the loop's answer, so allow a few more, far below per-channel).
    assert rings <= 3 * STEPS, rings
    assert rings < STREAMS * STEPS // 4


def test_wrk080_a_waiting_drain_gives_up_after_its_patience() -> None:
    async def main() -> list[str] | None:
        ch = TokenChannel(asyncio.get_running_loop())
        return await ch.drain(0.01)

    assert asyncio.run(main()) is None
