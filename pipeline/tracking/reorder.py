"""Reorder buffer: detector/embedder workers finish out of order; the matcher needs each camera's frames in
`seq` order. Items are released as soon as the next expected seq is present. If a seq stays missing for
longer than `timeout_s` (wall clock: this is about delivery latency, not stream time) it is skipped and logged;
a straggler that arrives after its seq was released or skipped is dropped (and reported as such).

`next_seq=None` means "start of a run, first seq unknown" (camera seqs are monotonic across runs and need not
start at 0): the buffer then waits up to `timeout_s` after the first item and starts at the lowest seq held
(seqs below `floor` are stale and refused).

`can_skip(lo, hi)`, when given, is asked before a timed-out gap [lo, hi) is skipped: the matcher answers True only
for seqs known to be gone (dropped at the source, dead-lettered). Any other missing seq is still in flight (a
worker killed with -9 holds it until its entries are reclaimed, reclaim_idle_ms later), so it is waited for, up to
`max_wait_s`: skipping it and acking it as "late" when it came was how kill -9 lost a frame."""
from __future__ import annotations

import logging
import time
from typing import Callable, Generic, TypeVar

log = logging.getLogger("facetrail.reorder")

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    def __init__(self, next_seq: int | None = 0, timeout_s: float = 2.0, max_items: int = 2048,
                 clock: Callable[[], float] = time.monotonic, name: str = "", floor: int = 0,
                 can_skip: Callable[[int, int], bool] | None = None, max_wait_s: float | None = None):
        self.next_seq = next_seq
        self.can_skip = can_skip
        self.max_wait_s = max(timeout_s, max_wait_s if max_wait_s is not None else timeout_s)
        self.floor = floor
        self.timeout_s = timeout_s
        self.max_items = max_items
        self.clock = clock
        self.name = name
        self._items: dict[int, T] = {}
        self._waiting_since: float | None = None  # when we started waiting for next_seq with later items held
        self.skipped = 0
        self.late = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, seq: int, item: T) -> bool:
        """Hold an item. False when it is too late (seq already released/skipped) or a duplicate."""
        if seq < (self.floor if self.next_seq is None else self.next_seq) or seq in self._items:
            self.late += 1
            return False
        self._items[seq] = item
        if seq != self.next_seq and self._waiting_since is None:
            self._waiting_since = self.clock()
        return True

    def pop_ready(self) -> list[tuple[int, T]]:
        """Items in seq order that can be applied now (skipping gaps that timed out or overflowed)."""
        out: list[tuple[int, T]] = []
        if self.next_seq is None and self._items:
            lowest = min(self._items)
            since = self._waiting_since  # set by the first push (its seq is not next_seq, which is None)
            if lowest == self.floor or (since is not None and self.clock() - since >= self.timeout_s) \
                    or len(self._items) > self.max_items:
                self.next_seq = lowest
            else:
                return out
        if self.next_seq is None:  # nothing pushed yet
            self._waiting_since = None
            return out
        while self._items:
            if self.next_seq in self._items:
                out.append((self.next_seq, self._items.pop(self.next_seq)))
                self.next_seq += 1
                self._waiting_since = None
                continue
            now = self.clock()
            if self._waiting_since is None:
                self._waiting_since = now
            overflow = len(self._items) > self.max_items
            waited = now - self._waiting_since
            if overflow or waited >= self.timeout_s:
                nxt = min(self._items)
                if not overflow and waited < self.max_wait_s and self.can_skip is not None \
                        and not self.can_skip(self.next_seq, nxt):
                    break  # still in flight somewhere: keep waiting (bounded by max_wait_s)
                log.warning("camera=%s reorder: seq %d..%d missing for %.1fs%s; skipped", self.name,
                            self.next_seq, nxt - 1, now - self._waiting_since, " (buffer full)" if overflow else "")
                self.skipped += nxt - self.next_seq
                self.next_seq = nxt
                self._waiting_since = None
                continue
            break
        if not self._items:
            self._waiting_since = None
        return out

    def restart(self, floor: int) -> None:
        """After end of stream: the next run starts at an unknown seq >= floor."""
        self.next_seq = None
        self.floor = floor
        self._waiting_since = None

    def get(self, seq: int) -> T | None:
        return self._items.get(seq)

    def held(self) -> list[int]:
        return sorted(self._items)
