"""FrameSampler (pipeline/streamtime.py), the one sampler of files (by stream time) and live sources (by wall
clock), keeps exactly the frames the two loops it replaced kept (written out below as they were)."""
from __future__ import annotations

import random

import pytest

from pipeline.streamtime import FrameSampler


def file_loop(period: float, times: list[float]) -> list[int]:
    """push_file's sampling before the sampler (stream time, a grid from 0)."""
    kept, next_t = [], 0.0
    for i, pts in enumerate(times):
        if period:
            if pts + 1e-6 < next_t:
                continue
            next_t += period
            while next_t <= pts:
                next_t += period
        kept.append(i)
    return kept


def live_loop(period: float, times: list[float]) -> list[int]:
    """The grabber's live sampling before the sampler (wall clock, resynced after a stall)."""
    kept, next_emit = [], 0.0
    for i, now in enumerate(times):
        if period:
            if now + 0.2 * period < next_emit:
                continue
            next_emit = next_emit + period if next_emit and now - next_emit < period else now + period
        kept.append(i)
    return kept


def sampled(sampler: FrameSampler, times: list[float]) -> list[int]:
    return [i for i, t in enumerate(times) if sampler.take(t)]


def frame_times(rng: random.Random, start: float, n: int) -> list[float]:
    """A source at 10..30 fps with jitter, the odd stall of up to 2 s and the odd repeated time."""
    t, out = start, []
    for _ in range(n):
        r = rng.random()
        t += 0.0 if r < 0.03 else rng.uniform(1.0, 2.0) if r < 0.06 else rng.uniform(1 / 30, 1 / 10)
        out.append(round(t, 4))
    return out


@pytest.mark.parametrize("fps", [None, 1.0, 2.5, 5.0, 12.0, 29.97, 60.0])
def test_one_sampler_keeps_what_the_file_and_live_loops_kept(fps):
    rng = random.Random(int((fps or 0) * 100))
    period = 1.0 / fps if fps else 0.0
    for trial in range(20):
        pts = frame_times(rng, 0.0 if trial % 2 else rng.uniform(-0.1, 0.5), 300)
        assert sampled(FrameSampler.by_stream_time(fps), pts) == file_loop(period, pts)
        wall = frame_times(rng, rng.uniform(1.0, 1e5), 300)
        assert sampled(FrameSampler.by_wall_clock(fps), wall) == live_loop(period, wall)


def test_sampling_rates():
    """At 25 fps in, 5 fps out keeps every fifth frame by either clock; no fps keeps them all."""
    times = [i / 25 for i in range(250)]
    assert sampled(FrameSampler.by_stream_time(5.0), times) == list(range(0, 250, 5))
    assert len(sampled(FrameSampler.by_wall_clock(5.0), [100.0 + t for t in times])) == 50
    assert sampled(FrameSampler.by_wall_clock(None), times) == list(range(250))
    # a 3.1 s stall: files stay on their grid from 0 (the next kept frame is the first at or past a whole
    # second), live sources start again at the first frame after it
    gap = times[:50] + [t + 3.1 for t in times[50:]]
    kept = sampled(FrameSampler.by_stream_time(1.0), gap)
    assert kept[:4] == [0, 25, 50, 73] and gap[72] < 6.0 <= gap[73]
    kept = sampled(FrameSampler.by_wall_clock(1.0), [100.0 + t for t in gap])
    assert 50 in kept and 51 not in kept and 52 not in kept


def test_live_restart_after_keyframes_only():
    """An idle camera's PyAV reader hands out keyframes only (here every 1/3 s, 30 fps in, 5 fps out): the
    keyframe that wakes it comes late on the grid, and catching up kept the very next frame, one frame (33 ms)
    later: two samples whose faces the reembed gate sees as the same moment. Restarting the grid at the waking
    keyframe keeps the next sample a period later."""
    keys = [100.0 + k / 3 for k in range(4)]          # idle: keyframes only
    awake = [keys[-1] + i / 30 for i in range(1, 16)]  # woken at keys[-1]: every frame again
    for restart, first_after in ((False, 1), (True, 5)):
        s = FrameSampler.by_wall_clock(5.0)
        assert [s.take(t) for t in keys] == [True] * 4
        if restart:
            s.restart(keys[-1])
        kept = [i + 1 for i, t in enumerate(awake) if s.take(t)]
        assert kept[0] == first_after, kept
        assert all(b - a >= 5 for a, b in zip(kept, kept[1:]))
    s = FrameSampler.by_wall_clock(None)  # every frame: nothing to restart
    s.restart(1.0)
    assert s.take(1.0) and s.take(1.0)
