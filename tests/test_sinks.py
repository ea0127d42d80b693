"""Sinks against a real mosquitto (started here on a free port) and a local HTTP receiver: MQTT topics with
QoS 1, signed webhooks, Redis pub/sub; a dead webhook neither stalls the others nor loses its events."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as paho
import pytest
import redis

from pipeline.config import MqttSink, WebhookSink
from pipeline.events import Event, EventStore
from pipeline.events.sinks import SinkDispatcher, build_sinks
from pipeline.events.sinks.webhook import sign, verify
from pipeline.streams import StreamNames

from conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SECRET = "s3cret"


def wait_until(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def mosquitto(tmp_path):
    if not shutil.which(MOSQUITTO) and not __import__("os").path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (make system-deps installs it)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    assert wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10), "mosquitto did not start"
    yield port
    proc.terminate()
    proc.wait(10)


class Receiver:
    """A local webhook receiver: records (headers, body) of every POST, answers 200."""

    def __init__(self, port: int = 0):
        rec = self
        self.got: list[tuple[dict, bytes]] = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.got.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def events(n):
    out = []
    for i in range(n):
        ident = "lin-manuel miranda" if i % 2 else None
        out.append(Event.make("identity.matched" if ident else "track.ended", "stage", f"stage:{i}:0",
                              "id1" if ident else None, identity=ident, score=0.6, first_seen=1.0, last_seen=2.0,
                              frames=5, seq=i))
    return out


def test_webhook_signature():
    body = b'{"a": 1}'
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body))
    assert not verify(SECRET, body, None)


def test_mqtt_webhook_pubsub_and_dead_sink(settings, mosquitto):
    r = redis.Redis.from_url(settings.redis.url)
    good = Receiver()
    dead_port = free_port()  # nothing listens here yet
    settings.sinks.mqtt = MqttSink(enabled=True, port=mosquitto, timeout_s=5)
    settings.sinks.webhooks = [WebhookSink(url=good.url, name="good", secret=SECRET, retries=1, backoff_s=0.05),
                               WebhookSink(url=f"http://127.0.0.1:{dead_port}/hook", name="dead", secret=SECRET,
                                           retries=1, backoff_s=0.05, timeout_s=1)]
    settings.sinks.max_backoff_s = 0.5

    got_mqtt: list[tuple[str, dict, int]] = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    sub.on_message = lambda c, u, m: got_mqtt.append((m.topic, json.loads(m.payload), m.qos))
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, *a: c.subscribe("facetrail/#", qos=1)
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    assert subscribed.wait(10)

    ps = r.pubsub()
    ps.subscribe(StreamNames(settings.redis.key_prefix).events)
    ps.get_message(timeout=1)  # the subscribe confirmation

    stop = threading.Event()
    disp = SinkDispatcher(r, settings, build_sinks(settings, stop), consumer="t1", stop=stop, block_ms=200).start()
    try:
        evs = events(6)
        EventStore(r, settings).add(evs)
        want = {e.id for e in evs}
        # MQTT and the good webhook get everything although the dead webhook keeps failing
        assert wait_until(lambda: {p["id"] for t, p, q in got_mqtt if t == "facetrail/events"} == want)
        assert wait_until(lambda: {json.loads(b)["id"] for _, b in good.got} == want)
        topics = {t for t, _, _ in got_mqtt}
        assert {"facetrail/stage/unknown", "facetrail/stage/lin-manuel miranda"} <= topics
        assert all(q == 1 for _, _, q in got_mqtt)
        for headers, body in good.got:
            assert verify(SECRET, body, headers.get("X-Facetrail-Signature"))
            assert headers["X-Facetrail-Event-Id"] == json.loads(body)["id"]
        published = []
        while (m := ps.get_message(timeout=0.5)) is not None:
            if m["type"] == "message":
                published.append(json.loads(m["data"])["id"])
        assert sorted(published) == sorted(want)
        # the dead sink lags in its own group, nothing acked
        pending = r.xpending(StreamNames(settings.redis.key_prefix).events, "sink:webhook-dead")
        assert pending["pending"] >= 1
        # it comes back: it catches up with every event, in order, none lost
        late = Receiver(dead_port)
        try:
            assert wait_until(lambda: [json.loads(b)["id"] for _, b in late.got] == [e.id for e in evs], 60)
        finally:
            late.close()
    finally:
        stop.set()
        disp.join()
        sub.loop_stop()
        good.close()
