"""MQTT sink (paho-mqtt 2.x): every event on `<prefix>/events` and on `<prefix>/<camera>/<identity|unknown>`,
QoS from config (1 by default), waiting for the broker's PUBACK before the event counts as delivered."""
from __future__ import annotations

import logging
import re
import threading

import paho.mqtt.client as paho

from ...config import MqttSink as MqttConfig
from ..model import Event
from . import SINKS
from .base import Sink, SinkError

log = logging.getLogger("facetrail.sinks.mqtt")


def topic_part(s: str) -> str:
    """MQTT topic level from a name: no wildcards or separators."""
    return re.sub(r"[+#/\x00]", "_", s) or "_"


@SINKS.register("mqtt")
class MqttEventSink(Sink):
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, client_id: str | None = None):
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.rstrip("/")
        self._connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or client_id or "",
                                  clean_session=True)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.max_queued_messages_set(1000)
        self._started = False

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            log.info("mqtt connected %s:%s", self.cfg.host, self.cfg.port)
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self._connected.clear()

    def _ensure(self) -> None:
        if not self._started:
            try:
                self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
            except (OSError, ValueError) as e:
                raise SinkError(f"mqtt {self.cfg.host}:{self.cfg.port}: {e}") from None
            self.client.loop_start()
            self._started = True
        if not self._connected.wait(self.cfg.timeout_s):
            raise SinkError(f"mqtt broker {self.cfg.host}:{self.cfg.port} not connected")

    def topics(self, event: Event) -> list[str]:
        who = topic_part(event.identity) if event.identity else "unknown"
        return [f"{self.prefix}/events", f"{self.prefix}/{topic_part(event.camera)}/{who}"]

    def deliver(self, event: Event, raw: bytes) -> None:
        self._ensure()
        infos = [self.client.publish(t, raw, qos=self.cfg.qos) for t in self.topics(event)]
        for info in infos:
            if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_NO_CONN:
                raise SinkError(f"mqtt publish failed rc={info.rc}")
            try:
                info.wait_for_publish(self.cfg.timeout_s)
            except (RuntimeError, ValueError) as e:
                raise SinkError(f"mqtt publish: {e}") from None
            if not info.is_published():
                raise SinkError("mqtt publish not acknowledged in time")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
