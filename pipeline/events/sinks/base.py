from __future__ import annotations

from ..model import Event


class SinkError(RuntimeError):
    """Delivery failed; the dispatcher retries (the event stays pending in the sink's consumer group)."""


class PermanentSinkError(SinkError):
    """The receiver refused this event for good (e.g. HTTP 400/401): logged, counted, and not retried."""


class Sink:
    name = "base"

    def deliver(self, event: Event, raw: bytes) -> None:
        """Deliver one event (raw = its JSON). Raise SinkError (or any exception) on failure."""
        raise NotImplementedError

    def close(self) -> None:
        pass
