"""Match events: the typed model, the Redis-backed store with its query indexes, and the sinks that deliver
events to the outside world (Redis stream + pub/sub, MQTT, webhooks).

Importing this package registers the store's purge on the gallery's remove hook (index.hooks.on_remove),
so removing a person from the gallery also removes their events and snapshots."""
from .model import EVENT_TYPES, Event, event_id
from .store import EventStore, FencedError, Page, purge_identity, register_gallery_hook

register_gallery_hook()

__all__ = ["Event", "EVENT_TYPES", "event_id", "EventStore", "FencedError", "Page", "purge_identity"]
