"""The work queue: heavy work in turn, refused at once (with the Retry-After the work ahead implies)
when it cannot start before its deadline, deadlines that grow with the work, and a pace learnt from
finished work. Real asyncio, real sleeps standing in for the work."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import DeadlineExceeded, Overloaded
from service.inference.work_queue import DEADLINE_WORK_FACTOR, Work, WorkQueue


def work(seconds: float, slack_s: float, what: str = "w") -> Work:
    return Work(seconds, slack_s, working_bytes=0, what=what)


async def run(queue: WorkQueue, job: Work, actual_s: float, log: list[str]) -> None:
    """Take a turn and 'work' for actual_s; log what happened."""
    loop = asyncio.get_running_loop()
    try:
        async with queue.turn(job):
            log.append(f"{job.what} start {loop.time():.1f}")
            await asyncio.sleep(actual_s)
            log.append(f"{job.what} end")
    except Overloaded as exc:
        log.append(f"{job.what} 429 after {exc.retry_after_s:.1f}")


def test_heavy_work_takes_turns_and_what_cannot_start_in_time_is_refused_at_once() -> None:
    """Four of 0.4 s each with 0.5 s of slack: the first runs, the second waits 0.4 s, the third
    would wait 0.8 s > 0.5 s: refused at once, told to come back in 0.3 s (0.8 - 0.5), and so is
    the fourth. Nobody starts after waiting longer than its slack."""
    async def main() -> list[str]:
        queue, log = WorkQueue(heavy_s=0.01), []
        jobs = [work(0.4, 0.5, name) for name in "abcd"]
        await asyncio.gather(*(run(queue, job, 0.4, log) for job in jobs))
        return log

    log = asyncio.run(main())
    refused = [line for line in log if "429" in line]
    assert [line.split()[0] for line in refused] == ["c", "d"], log
    assert all(0.2 <= float(line.split()[-1]) <= 0.45 for line in refused), log  # Retry-After ≈ 0.3 s
    assert log.index("a end") < log.index(next(line for line in log if line.startswith("b start"))), log
    assert sum("end" in line for line in log) == 2


def test_light_work_never_waits() -> None:
    async def main() -> list[str]:
        queue, log = WorkQueue(heavy_s=0.1), []
        await asyncio.gather(run(queue, work(5.0, 10.0, "heavy"), 0.3, log),
                             *(run(queue, work(0.05, 0.01, f"light{i}"), 0.05, log) for i in range(5)))
        return log

    log = asyncio.run(main())
    assert not any("429" in line for line in log), log
    assert log.index("light4 end") < log.index("heavy end")  # ran beside the heavy work, not after it


def test_a_queued_request_whose_slack_runs_out_is_refused_not_started_late() -> None:
    """The running work takes far longer than expected (0.1 s expected, 1 s real): the one queued
    behind it gives up after its slack (0.3 s) with 429, instead of starting late and getting 504."""
    async def main() -> list[str]:
        queue, log = WorkQueue(heavy_s=0.01), []
        first = asyncio.create_task(run(queue, work(0.1, 0.3, "slow"), 1.0, log))
        await asyncio.sleep(0.01)
        await run(queue, work(0.1, 0.3, "next"), 0.1, log)
        log.append("next gave up")
        await first
        return log

    log = asyncio.run(main())
    assert log.index("next gave up") < log.index("slow end"), log
    assert any(line.startswith("next 429") for line in log), log


def test_the_deadline_is_slack_plus_twice_the_expected_work_and_the_pace_is_learnt() -> None:
    async def main() -> tuple[float, float, float]:
        queue = WorkQueue(heavy_s=0.01)
        loop = asyncio.get_running_loop()
        async with queue.turn(work(0.2, 1.0)) as deadline:
            first = deadline - loop.time()
            await asyncio.sleep(0.4)  # twice as long as estimated: the pace moves towards 2
        pace = queue.pace
        async with queue.turn(work(0.2, 1.0)) as deadline:
            second = deadline - loop.time()
        return first, pace, second

    first, pace, second = asyncio.run(main())
    assert first == pytest.approx(1.0 + DEADLINE_WORK_FACTOR * 0.2, abs=0.05)
    assert 1.2 < pace < 1.5  # 0.7 · 1 + 0.3 · 2
    assert second == pytest.approx(1.0 + DEADLINE_WORK_FACTOR * 0.2 * pace, abs=0.05)


def test_an_overrun_still_teaches_the_pace_and_frees_the_turn() -> None:
    async def main() -> tuple[float, list[str]]:
        queue, log = WorkQueue(heavy_s=0.01), []
        with pytest.raises(DeadlineExceeded):
            async with queue.turn(work(0.1, 0.1)):
                await asyncio.sleep(0.3)
                raise DeadlineExceeded("overran")
        pace = queue.pace
        await run(queue, work(0.1, 0.1, "after"), 0.0, log)
        return pace, log

    pace, log = asyncio.run(main())
    assert pace > 1.5 and log[-1] == "after end", (pace, log)


def test_a_client_leaving_while_queued_gives_its_place_up() -> None:
    async def main() -> list[str]:
        queue, log = WorkQueue(heavy_s=0.01), []
        first = asyncio.create_task(run(queue, work(0.2, 5.0, "first"), 0.2, log))
        await asyncio.sleep(0.01)
        leaving = asyncio.create_task(run(queue, work(3.0, 5.0, "leaving"), 3.0, log))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.sleep(0.01)
        assert queue.ahead_s(asyncio.get_running_loop().time()) < 0.5  # its 3 s no longer count
        await run(queue, work(0.1, 0.5, "third"), 0.0, log)  # would be refused if the 3 s still stood ahead
        await first
        return log

    log = asyncio.run(main())
    assert "third end" in log and not any("429" in line for line in log), log
