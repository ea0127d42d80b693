"""Sinks role: deliver events from the events stream to MQTT and webhooks (SinkDispatcher), outside the matcher.

By default every matcher process runs these delivery threads itself (`sinks.in_matcher: true`). Set it to false
and run this role instead (`python -m workers.sinks`, or as a supervisor role) to scale or isolate delivery.
Several of these can run at once: each sink's consumer group shares the work and takes over a dead one's
pending events after `workers.reclaim_idle_ms`."""
from __future__ import annotations

import logging
import threading

from pipeline.backbone import connect
from pipeline.config import Settings
from pipeline.events.sinks import SinkDispatcher, build_sinks
from pipeline.metrics import Heartbeat

log = logging.getLogger("facetrail.sinks")


def run(settings: Settings, *, consumer: str, stop: threading.Event) -> None:
    r = connect(settings)
    sinks = build_sinks(settings, stop)
    heartbeat = Heartbeat(r, settings, "sinks", consumer)
    if not sinks:
        log.warning("sinks %s: no sink configured (sinks.mqtt.enabled / sinks.webhooks); idling", consumer)
    disp = SinkDispatcher(r, settings, sinks, consumer=consumer, stop=stop).start()
    log.info("sinks %s: delivering to %s", consumer, ", ".join(s.name for s in sinks) or "nothing")
    try:
        while not stop.wait(1.0):
            heartbeat.beat()
    finally:
        disp.join(timeout=5)
        heartbeat.clear()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    from pipeline.config import load_settings

    from .base import default_consumer

    p = argparse.ArgumentParser(prog="workers.sinks")
    p.add_argument("--consumer", default=None)
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(load_settings(), consumer=a.consumer or default_consumer("sinks"), stop=stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
