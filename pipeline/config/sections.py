"""One pydantic model per concern. Every model forbids unknown keys so a typo is an error, not a silent default."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facetrail"


def _default_models_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facetrail" / "models"


class PathsConfig(Section):
    """Where state lives. Two data dirs never share state (each gets its own embedded Redis)."""

    data_dir: Path = Field(default_factory=_default_data_dir)


class RedisConfig(Section):
    """url unset -> a private embedded redis-server on a unix socket under data_dir (AOF on), and a second one
    without persistence for frames and faces in flight (transient_url)."""

    url: str | None = None
    transient_url: str | None = Field(None, description="server for frames/faces in flight (no persistence "
                                                        "needed); unset: redis.url, or an embedded one")
    key_prefix: str = "ft"
    socket_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    cluster: bool = Field(False, description="redis.url names one node of a Redis Cluster (also implied by a "
                                             "redis+cluster://host:port,host:port url)")
    wait_replicas: int | None = Field(None, ge=0, le=16,
                                      description="WAIT for this many replicas after gallery and event writes "
                                                  "(unset: 1 on a cluster whose primaries have replicas, else 0)")
    wait_timeout_ms: int = Field(1000, ge=1, le=60_000)

    @field_validator("url", "transient_url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
        return v


class ModelsConfig(Section):
    dir: Path = Field(default_factory=_default_models_dir)
    detector: str = "yunet"
    embedder: str = "sface"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_backend: Literal["auto", "openvino", "opencv"] = Field(
        "auto", description="SFace on CPU: auto = OpenVINO when the openvino extra is installed, else OpenCV DNN")
    cpu_precision: Literal["auto", "f32", "bf16"] = Field(
        "auto", description="OpenVINO precision: auto = the fastest the CPU runs natively (bf16 on AVX-512 BF16/AMX, "
                            "vectors within cosine 0.9998 of f32), f32 = OpenCV's numbers exactly")
    # YuNet misses large faces at full resolution: detect on a copy scaled to this long side.
    detect_max_side: int = Field(640, ge=160, le=4096)
    # Measured by bench/calibrate_threshold.py (README "Face engine"): 0.75 finds every face on the shared photos
    # with a 0.05 margin over the highest false detection (0.70); 0.9 loses two thirds of the clip's faces.
    det_score_threshold: float = Field(0.75, gt=0.0, lt=1.0)
    nms_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    min_face_px: int = Field(16, ge=4)
    embed_batch: int = Field(32, ge=1, le=1024)
    # issue 15, bench/eval_hard.py (README "Hard footage"): frames above detect_max_side where the coarse pass finds
    # nothing or only faces under small_face_px get a second pass at full resolution
    small_face_pass: Literal["off", "full", "regions"] = Field(
        "regions", description="full = the whole frame again at full resolution; regions = crops around the coarse "
                           "pass's small faces only (sharper landmarks, no new faces); off")
    small_face_px: int = Field(64, ge=8, le=4096, description="a coarse face below this (full-res px) is small")
    embed_flip: bool = Field(False, description="embed every face and its mirror image and average the two "
                                                "(gallery and live faces alike; twice the embedding cost)")


class ThresholdsConfig(Section):
    """Open-set decision: cosine >= match and a margin over the runner-up identity."""

    # SFace cosine; calibrated on deepface pairs.csv (bench/calibrate_threshold.py): middle of the gap between the
    # highest different-person (0.35) and lowest same-person (0.61) score.
    match: float = Field(0.48, ge=-1.0, le=1.0)
    margin: float = Field(0.05, ge=0.0, le=1.0)
    min_enroll_quality: float = Field(0.3, ge=0.0, le=1.0)


class CameraConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str
    fps: float | None = Field(None, gt=0, description="analysis fps; None = every frame")
    enabled: bool = True
    external: bool = Field(False, description="frames are pushed by `facetrail process`, not read by grabbers")
    liveness: CameraLiveness | None = Field(None, description="per-camera liveness gate (None: analyzers.liveness."
                                                                "required applies)")

    @model_serializer(mode="wrap")
    def _without_unset_liveness(self, handler):
        """A camera without its own liveness setting serializes as before (the registry in Redis, `config show`)."""
        data = handler(self)
        if isinstance(data, dict) and data.get("liveness", 0) is None:
            data.pop("liveness")
        return data


class WorkersConfig(Section):
    batch_max: int = Field(16, ge=1, le=512)
    batch_wait_ms: int = Field(20, ge=0, le=10_000)
    reclaim_idle_ms: int = Field(15_000, ge=100)
    frames_maxlen: int = Field(64, ge=2, description="per-camera frame backlog; older frames are dropped and counted")
    jpeg_quality: int = Field(85, ge=10, le=100)
    watchdog_s: float = Field(3.0, gt=0)
    # capped so a camera that comes back is picked up within ~this long (plus connect time)
    reconnect_max_s: float = Field(2.0, gt=0)
    detectors: int = Field(1, ge=0, description="detector workers started by `facetrail up`")
    embedders: int = Field(1, ge=0)
    matchers: int = Field(1, ge=0)
    open_timeout_s: float = Field(5.0, gt=0, description="give up opening a stream after this long")
    faces_maxlen: int = Field(4096, ge=16, description="detectors pause (frames back up and drop at the source) "
                                                        "while the faces stream holds this many entries")
    faces_shards: int = Field(0, ge=0, le=1024, description="faces streams, by a stable hash of the camera "
                                                            "(0: 1 on a single Redis, 8 on a Redis Cluster)")
    embeddings_maxlen: int = Field(20_000, ge=100, description="approximate cap of embeddings:{camera}")
    done_marker_ttl_s: int = Field(900, ge=10, description="how long a processed frame's idempotency marker lives")
    thumb_px: int = Field(96, ge=16, le=512, description="long side of the per-face thumbnail JPEG")
    heartbeat_s: float = Field(2.0, gt=0)
    cv_threads: int = Field(0, ge=0, le=256, description="OpenCV (and OpenVINO) threads per detector/embedder "
                                                         "process (0 = the library's default: one per core)")
    reembed_s: float = Field(0.1, ge=0.0, le=10.0,
                             description="a face at the place of one embedded less than this many stream seconds "
                                         "ago (and no better) is tracked without a new embedding; 0 = embed all")
    reembed_settle_n: int = Field(8, ge=1, description="embeddings of a followed face at reembed_s spacing "
                                                       "before it is re-embedded only every reembed_settled_s")
    reembed_settled_s: float = Field(0.5, ge=0.0, le=60.0,
                                     description="spacing of a settled face's embeddings (never below reembed_s)")
    reembed_shared: bool = Field(False, description="one reembed gate per camera in Redis, shared by every detector "
                                                    "(one Lua call per batch), instead of one per detector process")


class TrackingConfig(Section):
    iou_threshold: float = Field(0.3, ge=0.0, le=1.0)
    appearance_threshold: float = Field(0.4, ge=-1.0, le=1.0,
                                        description="cosine that links a face to a nearby track without IoU")
    appearance_veto: float = Field(0.15, ge=-1.0, le=1.0,
                                   description="below this cosine a face never joins the track (scene cuts)")
    max_age_s: float = Field(2.0, gt=0, description="stream seconds without a face before a track ends")
    min_track_frames: int = Field(3, ge=1, description="faces before a track is announced (track.started)")
    reorder_timeout_ms: int = Field(2000, ge=0)
    lease_ttl_s: float = Field(5.0, gt=0)
    min_votes: int = Field(1, ge=1)
    vote_ratio: float = Field(2.0, ge=1.0, description="leading identity must outweigh the runner-up this much")
    # 0.40: above the highest different-person pair score with gallery.lowres_templates [40, 56] (0.39, deepface
    # pairs); bench/eval_hard.py tune set: named tracks' means >= 0.46, strangers' <= 0.29 (README "Hard footage")
    track_match: float | None = Field(0.40, ge=-1.0, le=1.0,
                                      description="cosine the track's mean embedding needs to name a track no "
                                                  "single face could (null = off)")
    track_margin: float = Field(0.1, ge=0.0, le=1.0, description="track mean's lead over the runner-up identity")
    track_min_faces: int = Field(8, ge=2, description="faces before the track mean counts")
    # consistent evidence (README "Hard footage", bench/eval_hard_pairs.py): off, it names a few different-person
    # degraded pairs (0.05 % at 0.30 / 0.20 without low-res templates, more with them)
    track_consistent_match: float | None = Field(
        None, ge=-1.0, le=1.0, description="a lower bar for the track mean when its lead is track_consistent_margin "
                                           "and its identity is top-1 of track_consistent_share of the faces "
                                           "(null = off)")
    track_consistent_margin: float = Field(0.2, ge=0.0, le=1.0)
    track_consistent_share: float = Field(0.8, ge=0.0, le=1.0)


class ApiConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_mb: float = Field(10.0, gt=0)
    max_pixels: int = Field(40_000_000, ge=1)
    require_keys: Literal["auto", "always", "never"] = "auto"
    max_files: int = Field(20, ge=1, le=1000, description="image parts per request (enroll); the request body "
                                                           "is capped at max_files x max_upload_mb + 1 MiB")


class MqttSink(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "facetrail"
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    timeout_s: float = Field(5.0, gt=0)


class WebhookSink(Section):
    url: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             description="consumer-group name; default: derived from the url")
    secret: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(5, ge=0, description="quick retries (exponential backoff) before the sink backs off")
    backoff_s: float = Field(0.5, gt=0)


class SinksConfig(Section):
    events_maxlen: int = Field(100_000, ge=100)
    pubsub: bool = Field(True, description="also PUBLISH each event on <prefix>:events (Redis pub/sub)")
    in_matcher: bool = Field(True, description="run sink delivery threads inside each matcher process")
    max_backoff_s: float = Field(30.0, gt=0, description="a failing sink retries at most this far apart")
    mqtt: MqttSink = Field(default_factory=MqttSink)
    webhooks: list[WebhookSink] = Field(default_factory=list)


class EventsConfig(Section):
    retention_days: float = Field(30.0, gt=0)
    snapshot_jpeg_quality: int = Field(85, ge=10, le=100)
    sweep_interval_s: float = Field(600.0, gt=0, description="how often a matcher runs the retention sweep")


class GalleryConfig(Section):
    ann_above: int = Field(100_000, ge=1000, description="switch from exact search to the ANN index above this many "
                                                       "templates (back below half of it)")
    ann: Literal["pq", "hnsw"] = Field("pq", description="ANN index: pq = PQ fast scan + exact re-scoring "
                                                          "(README, Benchmarks), hnsw = HNSW graph")
    pq_k_factor: int = Field(16, ge=1, le=1024, description="pq: candidates re-scored exactly per result wanted")
    flip_augment: bool = False
    # issue 15 (bench/eval_hard.py, README "Hard footage"): a 36 px blurred face scores ~0.25 against the sharp
    # photo of its own person, but ~0.44 against the same photo brought down to 40 px; strangers stay <= 0.27
    lowres_templates: list[int] = Field(default_factory=list,
                                        description="also enroll each photo's aligned face brought down to these "
                                                    "sizes (px) and blurred, for far cameras; e.g. [40, 56]")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(80, ge=8, le=4096)
    hnsw_ef_search: int = Field(256, ge=1, le=65536,
                                description="HNSW search breadth: recall vs latency (README, Benchmarks)")
    top_k: int = Field(5, ge=2, le=1000, description="identities returned per face (>= 2 for the runner-up)")
    snapshot_every: int = Field(500, ge=1, description="changes in the log before a new snapshot is written")
    thumbnail_px: int = Field(128, ge=32, le=512, description="long side of the stored face thumbnail (JPEG)")


class UnknownsConfig(Section):
    """Unknown visitors: every track that ends unknown is kept (mean embedding, best faces) and clustered
    across cameras and days, so a recurring stranger can be named once (README "Unknown visitors")."""

    enabled: bool = True
    retention_days: float = Field(30.0, gt=0, description="unknown tracks (and their face crops) are kept this long")
    faces_per_track: int = Field(3, ge=1, le=16, description="best faces (embedding + crop) kept per ended track")
    faces_per_cluster: int = Field(12, ge=1, le=100, description="best faces a cluster shows")
    # bench/bench_unknowns.py: same-track halves vs same-frame tracks and the shared photos (README)
    link_threshold: float = Field(0.5, ge=-1.0, le=1.0,
                                  description="cosine to a member track's mean that proposes its cluster")
    cluster_threshold: float = Field(0.45, ge=-1.0, le=1.0,
                                     description="cosine to the cluster's centroid a track needs to join it")
    min_quality: float = Field(0.3, ge=0.0, le=1.0,
                               description="a track whose best face is below this quality is not clustered: tiny or "
                                           "blurred faces of different people look alike (bench_unknowns.py)")
    suggest_min: float = Field(0.3, ge=-1.0, le=1.0,
                               description="a cluster whose centroid comes this close to an enrolled person "
                                           "suggests that person")
    name_templates: int = Field(5, ge=1, le=50, description="best faces enrolled when a cluster is named")


class MotionConfig(Section):
    """Motion gating (pipeline/motion.py): frames where nothing moves skip the face detector (live cameras: in
    the grabber, before the JPEG)."""

    enabled: bool = True
    width: int = Field(160, ge=32, le=1280, description="width of the grey copy motion is measured on")
    threshold: int = Field(25, ge=1, le=255, description="grey-level change that counts as motion")
    min_area: float = Field(0.002, ge=0.0, le=1.0, description="share of the frame that must change")
    alpha: float = Field(0.2, gt=0.0, le=1.0, description="background update rate per frame")
    refresh_s: float = Field(5.0, gt=0.0, description="detect at least this often (stream seconds) regardless")
    at: Literal["grabber", "detector"] = Field(
        "grabber", description="where live cameras are gated: grabber = before the JPEG (a still frame travels "
                               "without pixels, FrameMsg v2), detector = after it; files are always gated in the "
                               "detector (a file's grabber runs ahead of the detector, so it cannot know who is hot)")
    hold_s: float = Field(1.0, ge=0.0, description="grabber: frames still go this long after the last motion "
                                                    "(covers the detector's delay in marking the camera hot)")
    idle_keyframes: bool = Field(True, description="grabber, decode.reader pyav: while a camera is idle decode "
                                                   "keyframes only; on motion decode the skipped stretch from its "
                                                   "buffered packets, so no sampled frame is lost")



class DecodeConfig(Section):
    """How grabbers decode live cameras (pipeline/decode.py; figures in bench/results/decode.json)."""

    reader: Literal["opencv", "pyav"] = Field(
        "pyav", description="live network cameras (rtsp, http; files and webcams always use OpenCV): pyav = PyAV, "
                            "skips what skip allows and, motion-gated, decodes an idle camera's keyframes only; "
                            "opencv = grab() every frame, convert the sampled ones")
    skip: Literal["auto", "none", "nonref", "nonkey"] = Field(
        "auto", description="pyav only: frames FFmpeg may leave undecoded (auto: non-reference frames, keyframes "
                            "only once they come at least as often as the camera's fps)")
    hwaccel: str = Field("none", pattern=r"^[a-z0-9_]+$",
                         description="hardware decoding: opencv: none|any|vaapi|d3d11|mfx; pyav: none or an FFmpeg "
                                     "hwdevice type (vaapi, cuda, qsv, ...); falls back to software")


class CameraLiveness(Section):
    required: bool = Field(False, description="a track must pass liveness to be named (else: spoof_suspected)")


class LivenessConfig(Section):
    """Liveness from the track's own motion (pipeline/analyzers/liveness.py; bench/eval_liveness.py)."""

    enabled: bool = Field(True, description="analyze every confirmed track at its end (liveness on track.ended)")
    required: bool = Field(False, description="default gate for cameras that do not set liveness.required")
    undetermined: Literal["deny", "allow"] = Field(
        "deny", description="under the gate, a track too still to judge: deny = ends spoof_suspected, names nobody; "
                            "allow = named as usual")
    live_threshold: float = Field(0.8, ge=0.0, description="parallax score at or above which a track is live")
    spoof_threshold: float = Field(0.8, ge=0.0, description="parallax score below which a moving track is a spoof")
    min_motion: float = Field(0.02, ge=0.0, le=1.0, description="non-shift motion (share of the crop) a crop pair "
                                                                "needs to count")
    min_pairs: int = Field(4, ge=1, le=100, description="moving pairs needed for a spoof verdict")
    max_gap: int = Field(3, ge=1, le=16, description="each crop is compared with the next max_gap crops")
    percentile: float = Field(50.0, ge=0.0, le=100.0, description="percentile of the pairs' parallax that scores")
    faces: int = Field(12, ge=2, le=64, description="grey face crops kept per open track (bounded memory)")


class AnalyzersConfig(Section):
    """Track analyzers: run once per confirmed track at its end, in the matcher (pipeline/analyzers/)."""

    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
CameraConfig.model_rebuild()
