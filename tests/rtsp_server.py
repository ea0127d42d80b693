#!/usr/bin/python3
"""A real RTSP server for the grabber tests: GStreamer's rtsp-server (Debian: gir1.2-gst-rtsp-server-1.0,
python3-gi, gstreamer1.0-plugins-{good,bad,ugly}) run by the system /usr/bin/python3.

    /usr/bin/python3 tests/rtsp_server.py VIDEO PORT [--path /cam]

Serves VIDEO at rtsp://127.0.0.1:PORT/cam in an endless loop, in real time: a feeder pipeline decodes the file
(seeking back to the start at its end) into an intervideosink; every RTSP client gets
intervideosrc -> x264enc (zerolatency, a keyframe every 10 frames) -> rtph264pay, so a client that connects at
any moment gets a picture within a third of a second. Prints "READY" on stdout once it listens.
Tests kill it (server gone), restart it on the same port, or SIGSTOP it (server frozen, TCP still open).

    /usr/bin/python3 tests/rtsp_server.py VIDEO PORT --mounts N --passthrough

bench/bench_cameras.py: N cameras at /cam0 .. /cam{N-1}, each client gets VIDEO's own H.264 as it is (no decode,
no re-encode: the server costs next to nothing, so the box's CPU goes to the pipeline), paced in real time from
the start of the file when it connects, and the stream ends at the end of the file (make VIDEO long enough).
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("port", type=int)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--mounts", type=int, default=0, help="serve /cam0 .. /cam{N-1} (with --passthrough)")
    ap.add_argument("--passthrough", action="store_true", help="serve the file's H.264 as is, once per client")
    args = ap.parse_args()
    Gst.init(None)
    if args.passthrough:
        return passthrough(args)

    channel = "facetrail-test"
    feeder = Gst.parse_launch(
        f'filesrc location="{args.video}" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! '
        f"video/x-raw,format=I420 ! intervideosink channel={channel} sync=true")
    bus = feeder.get_bus()
    bus.add_signal_watch()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:  # loop the clip
            feeder.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"feeder error: {err} {dbg}", file=sys.stderr, flush=True)
            loop.quit()

    bus.connect("message", on_message)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( intervideosrc channel={channel} ! video/x-raw,framerate=30/1 ! videoconvert ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=1500 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr, flush=True)
        return 1
    feeder.set_state(Gst.State.PLAYING)
    loop = GLib.MainLoop()
    print("READY", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    feeder.set_state(Gst.State.NULL)
    return 0


def passthrough(args) -> int:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    paths = [f"{args.path}{i}" for i in range(args.mounts)] if args.mounts else [args.path]
    for path in paths:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( filesrc location="{args.video}" ! qtdemux ! h264parse ! '
                           "rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(False)
        server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    print("READY", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
