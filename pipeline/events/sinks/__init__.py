"""Event sinks. The Redis stream + pub/sub sink is the commit itself (every committed event is XADDed to
<prefix>:events and PUBLISHed in the same Lua call, exactly once). The other sinks (MQTT, webhooks) are
fed from that stream by `SinkDispatcher`: one consumer group per sink, so a dead sink only lags its own
group and catches up when it comes back — it never blocks the pipeline, other sinks, or loses an event."""
from __future__ import annotations

from ...registry import Registry
from .base import Sink, SinkError

SINKS: Registry[Sink] = Registry("sink")

from . import mqtt, webhook  # noqa: E402,F401  (register themselves)
from .dispatcher import SinkDispatcher, build_sinks  # noqa: E402

__all__ = ["SINKS", "Sink", "SinkError", "SinkDispatcher", "build_sinks"]
