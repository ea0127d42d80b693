"""Webhook sink: HTTP POST of the event JSON, signed with HMAC-SHA256 over the exact body:

    X-Facetrail-Signature: sha256=<hex hmac(secret, body)>    (only when a secret is configured)
    X-Facetrail-Event: <type>     X-Facetrail-Event-Id: <id>  (receivers dedupe on the id)

Retries with exponential backoff (backoff_s, 2x, ...) `retries` times; after that the dispatcher keeps the
event pending and tries again later, so a receiver that is down for an hour still gets everything."""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading

import httpx

from ...config import WebhookSink as WebhookConfig
from ..model import Event
from . import SINKS
from .base import PermanentSinkError, Sink, SinkError

log = logging.getLogger("facetrail.sinks.webhook")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and header is not None and hmac.compare_digest(sign(secret, body), header)


@SINKS.register("webhook")
class WebhookEventSink(Sink):
    def __init__(self, cfg: WebhookConfig, stop: threading.Event | None = None):
        self.cfg = cfg
        self.name = "webhook-" + (cfg.name or hashlib.sha1(cfg.url.encode()).hexdigest()[:10])
        self.stop = stop or threading.Event()
        self.client = httpx.Client(timeout=cfg.timeout_s, follow_redirects=False)

    def deliver(self, event: Event, raw: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-Facetrail-Event": event.type,
                   "X-Facetrail-Event-Id": event.id, "User-Agent": "facetrail"}
        if self.cfg.secret:
            headers["X-Facetrail-Signature"] = sign(self.cfg.secret, raw)
        delay = self.cfg.backoff_s
        last = ""
        for attempt in range(self.cfg.retries + 1):
            try:
                resp = self.client.post(self.cfg.url, content=raw, headers=headers)
                if 200 <= resp.status_code < 300:
                    return
                last = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
                    # the receiver refuses this event for good (bad request, auth): retrying cannot help
                    raise PermanentSinkError(f"webhook {self.cfg.url}: HTTP {resp.status_code}")
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.cfg.retries:
                log.debug("webhook %s event=%s attempt %d failed (%s); retry in %.1fs", self.cfg.url, event.id,
                          attempt + 1, last, delay)
                if self.stop.wait(delay):
                    break
                delay *= 2
        raise SinkError(f"webhook {self.cfg.url}: {last}")

    def close(self) -> None:
        self.client.close()
