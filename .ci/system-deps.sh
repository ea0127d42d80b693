#!/usr/bin/env bash
# System packages the tests use: redis-server + redis-tools (external-server and Redis Cluster tests), mosquitto (MQTT sink),
# GStreamer's RTSP server for /usr/bin/python3 (grabber tests), chromium (the web UI's browser tests, driven by
# Playwright through executable_path: Playwright's own browser download is never used). Installs only what is missing.
set -euo pipefail
pkgs=()
command -v redis-server >/dev/null || pkgs+=(redis-server)
# redis-cli --cluster create (tests/test_cluster.py, bench/bench_backbone.py)
command -v redis-cli >/dev/null || pkgs+=(redis-tools)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || pkgs+=(mosquitto)
command -v chromium >/dev/null || pkgs+=(chromium)
# text in the UI screenshots and tests needs at least one font
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || pkgs+=(fonts-dejavu-core)
# tests/rtsp_server.py also needs these elements: x264enc (ugly), intervideosrc/sink + h264parse (bad),
# qtdemux (good), avdec_h264 (libav)
gst_elements_ok() {
  for e in x264enc intervideosrc intervideosink h264parse qtdemux avdec_h264 rtph264pay; do
    gst-inspect-1.0 "$e" >/dev/null 2>&1 || return 1
  done
}
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' 2>/dev/null \
   || ! command -v gst-inspect-1.0 >/dev/null || ! gst_elements_ok; then
  pkgs+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools gstreamer1.0-plugins-base
         gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "system-deps: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
