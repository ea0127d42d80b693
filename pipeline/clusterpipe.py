"""Non-transactional pipelines on a Redis Cluster that ride out a failover, as FailoverCluster's single commands do.

redis-py sends a cluster pipeline per node; a command that failed on a connection error is resent once through the
plain client, and a pipeline that cannot get a connection at all is retried at once a few times. During the ~2-3 s
before a replica is promoted both name the dead primary, so the pipeline fails. Here the commands whose result is
one of the failover errors (and only those: a command that succeeded is never sent again) are resent with a
backoff for up to `failover_s`. A pipeline that could not reach a node at all sent nothing, so all of it is resent.
Transactional pipelines (MULTI/EXEC) are left to redis-py: a MULTI that failed half-way is not ours to replay.

This is built on redis-py's PipelineStrategy (redis >= 6); without it, pipelines stay as redis-py makes them.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("facetrail.redis")

try:
    from redis.cluster import PipelineStrategy
except ImportError:  # pragma: no cover - an older redis-py: plain pipelines
    PipelineStrategy = None  # type: ignore[assignment,misc]


def failover_pipeline(pipe, failover_s: float, retry_on: tuple):
    """`pipe` (a non-transactional ClusterPipeline) with its commands resent through a failover."""
    if PipelineStrategy is not None and hasattr(pipe, "_execution_strategy"):
        pipe._execution_strategy = _FailoverStrategy(pipe, failover_s, retry_on)
    return pipe


if PipelineStrategy is not None:

    class _FailoverStrategy(PipelineStrategy):  # type: ignore[valid-type,misc]
        def __init__(self, pipe, failover_s: float, retry_on: tuple):
            super().__init__(pipe)
            self.failover_s = failover_s
            self.retry_on = retry_on

        def send_cluster_commands(self, stack, raise_on_error=True, allow_redirections=True):
            deadline = time.monotonic() + self.failover_s
            delay, todo = 0.05, list(stack)
            while todo:
                try:
                    super().send_cluster_commands(todo, raise_on_error=False, allow_redirections=allow_redirections)
                    todo = [c for c in todo if isinstance(c.result, self.retry_on)]
                    err = todo[0].result if todo else None
                except self.retry_on as e:  # no connection to a node: nothing of `todo` was sent
                    if time.monotonic() + delay > deadline:
                        raise
                    err = e
                if err is None or time.monotonic() + delay > deadline:
                    break
                log.warning("redis cluster: %s in a pipeline (%d command(s)); retrying in %.2fs",
                            type(err).__name__, len(todo), delay)
                time.sleep(delay)
                delay = min(2 * delay, 0.5)
            ordered = sorted(stack, key=lambda c: c.position)
            if raise_on_error:
                for c in ordered:
                    if isinstance(c.result, Exception):
                        self.annotate_exception(c.result, c.position + 1, c.args)
                        raise c.result
            return [c.result for c in ordered]
