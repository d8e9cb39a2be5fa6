"""``[media]``: sources, encoders (renditions), recording and live push of the kiosk-media process.

Every field has a default, so a config without ``[media]`` validates (the process then looks for
cameras named ``room_main`` and ``room_backup`` under ``[drivers.camera]`` and shows the "signal lost"
slate if there are none).

```toml
[media.sources]
main = "room_main"          # a [drivers.camera.<name>], a V4L2 path, or "lavfi:<filtergraph>"
backup = "room_backup"      # "" for none

[media.failover]
silence_intervals = 3       # main silent (or black) for this many frame intervals -> backup
holdoff_s = 5               # main healthy this long -> back to main

[media.failover.main]
kind = "live"               # live (room camera) | static (HDMI capture of slides, document camera)
freeze_s = 0.5              # still this long -> frozen; default by kind (live 0.5, static 0 = never)

[media.renditions.main]
codec = "h264"              # h264 | h265
encoder = "auto"            # auto (Pi 4: h264_v4l2m2m, else software) | libx264 | libx265 | h264_v4l2m2m
encoder_fallback = ""       # "" | libx264 | libx265: used when the encoder cannot be opened here
bitrate_kbps = 2000
size = "1280x720"
fps = 30
gop = 30                    # frames between keyframes (fragments and segments cut on keyframes)

[media.recording]
segment_s = 10
fragment_s = 0.5            # a power cut loses at most this much (<= 1 s)
max_age_days = 30
min_free_mb = 1024

[media.push]
url = ""                    # srt://host:port?streamid=..., rtsp://..., rtmp://... (H.264 only)

[media.audio]
source = ""                 # "" = no audio; alsa:hw:1,0 | alsa:default | lavfi:sine=frequency=440
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from drivers.camera.config import check_device, parse_size
from drivers.config import DriversConfig
from kiosk_core import config
from kiosk_core.config import SharedConfig, Strict
from kiosk_core.urls import LOOPBACK_HOSTS as LOOPBACK_HOSTS  # re-exported: media callers import them here
from kiosk_core.urls import is_loopback_host as is_loopback_host
from kiosk_core.urls import redact_url

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ENCODERS = {"h264": ("libx264", "h264_v4l2m2m"), "h265": ("libx265", "hevc_v4l2m2m")}


def check_spec(v: str) -> str:
    """A source SPEC: a camera name, a device path or ``lavfi:<filtergraph>``."""
    if v == "" or NAME.match(v):
        return v
    if v.startswith("/dev/"):
        # the camera driver's own rule: udev's persistent names (by-id, by-path), never "..".
        return check_device(v, "/dev/video0")
    if v.startswith("lavfi:") and 6 < len(v) <= 500 and all(32 <= ord(c) < 127 for c in v):
        return v
    raise ValueError(
        f"source {v!r} must be a camera name from [drivers.camera], a /dev/video* path or lavfi:<filtergraph>"
    )


class SourcesConfig(Strict):
    main: str = "room_main"
    backup: str = "room_backup"
    doccam: bool = Field(True, description="open [drivers.doccam] (preview + stills) if it is configured")

    @field_validator("main", "backup")
    @classmethod
    def _spec(cls, v: str) -> str:
        return check_spec(v)


FREEZE_S_BY_KIND = {"live": 0.5, "static": 0.0}


class SourceFailover(Strict):
    """How one camera role (``[media.failover.main]``, ``[media.failover.backup]``) is judged."""

    kind: Literal["live", "static"] = Field(
        "live",
        description="live: a room camera (a still picture is a fault); static: an HDMI capture of slides, "
        "a document camera, a test pattern (a still picture is normal while frames keep arriving)",
    )
    freeze_s: float | None = Field(
        None,
        ge=0.0,
        le=3600.0,
        description="still this long -> frozen (freezedetect's d); 0 = never; default by kind: "
        "live 0.5 s, static 0",
    )

    @property
    def freeze_after_s(self) -> float:
        return FREEZE_S_BY_KIND[self.kind] if self.freeze_s is None else self.freeze_s


class FailoverConfig(Strict):
    silence_intervals: float = Field(
        3.0, ge=1.0, le=30.0, description="frame intervals without a good frame before switching"
    )
    detect_frozen: bool = Field(
        True, description="a picture still for the source's freeze_s counts as no frame"
    )
    freeze_noise_db: float = Field(
        -60.0,
        ge=-100.0,
        le=0.0,
        description="a region is still while its mean absolute luma difference from the start of the "
        "still run is at most this, relative to full scale (freezedetect's n)",
    )
    freeze_live_area: float = Field(
        0.125,
        ge=0.0,
        lt=1.0,
        description="a picture is still while at most this share of its regions changes (an on-screen "
        "clock); 0 = every region must be still",
    )
    black_luma: int = Field(24, ge=0, le=64, description="mean luma at or below this is black (0: off)")
    holdoff_s: float = Field(5.0, ge=0.0, le=600.0, description="main healthy this long before returning")
    replay_s: float = Field(
        0.25, ge=0.0, le=2.0, description="backup frames kept so a switch replays the moments the main lost"
    )
    main: SourceFailover = SourceFailover()
    backup: SourceFailover = SourceFailover()

    def source(self, role: str) -> SourceFailover:
        """The per-source settings of ``role`` (main, backup); the defaults for any other."""
        found = getattr(self, role, None) if role in ("main", "backup") else None
        return found if isinstance(found, SourceFailover) else SourceFailover()


class RenditionConfig(Strict):
    codec: Literal["h264", "h265"] = "h264"
    encoder: str = Field(
        "",
        description="auto | libx264 | libx265 | h264_v4l2m2m | hevc_v4l2m2m; empty = software; auto = the "
        "board's hardware H.264 encoder if it has one (Pi 4), else software (drivers/camera/hw_encoder.py)",
    )
    bitrate_kbps: int = Field(2000, ge=50, le=50_000)
    size: str = "1280x720"
    fps: float = Field(30.0, gt=0, le=120)
    gop: int = Field(30, ge=1, le=600, description="frames between keyframes")
    preset: str = Field("veryfast", pattern=r"^[a-z]{1,16}$", description="x264/x265 preset")
    tune: str = Field(
        "zerolatency",
        pattern=r"^[a-z]{0,16}$",
        description="x264/x265 tune; zerolatency: no B-frames, no lookahead (low latency)",
    )
    threads: int = Field(0, ge=0, le=16, description="encoder threads, 0 = automatic")
    encoder_fallback: Literal["", "libx264", "libx265"] = Field(
        "",
        description="software encoder to use when `encoder` cannot be opened on this machine (e.g. "
        "h264_v4l2m2m without its /dev/video11); empty = no fallback, the encoder error stands",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @model_validator(mode="after")
    def _encoder(self) -> RenditionConfig:
        if self.encoder and self.encoder != "auto" and self.encoder not in ENCODERS[self.codec]:
            raise ValueError(
                f"encoder {self.encoder!r} does not make {self.codec}; use auto or one of "
                f"{', '.join(ENCODERS[self.codec])}"
            )
        if self.encoder_fallback and self.encoder_fallback != ENCODERS[self.codec][0]:
            raise ValueError(
                f"encoder_fallback {self.encoder_fallback!r} does not make {self.codec}; use "
                f"{ENCODERS[self.codec][0]!r} or leave it empty"
            )
        return self

    @property
    def encoder_name(self) -> str:
        if self.encoder == "auto":
            # What the board reports: Pi 4 -> h264_v4l2m2m; Pi 5, x86 and any H.265 -> software.
            from drivers.camera.hw_encoder import choose_encoder

            return choose_encoder(self.codec)
        return self.encoder or ENCODERS[self.codec][0]


class RecordingConfig(Strict):
    enabled: bool = True
    dir: Path | None = Field(None, description="default: <storage.data_dir>/recordings")
    rendition: str = "main"
    container: Literal["fmp4", "mpegts"] = "fmp4"
    segment_s: float = Field(10.0, ge=1.0, le=3600.0)
    fragment_s: float = Field(0.5, ge=0.1, le=1.0, description="at most this much is lost on a power cut")
    max_age_days: float = Field(30.0, gt=0, le=3650)
    min_free_mb: int = Field(1024, ge=0)
    sweep_interval_s: float = Field(60.0, ge=1.0, le=86400.0)


class PushConfig(Strict):
    url: str = Field(
        "",
        max_length=1000,
        description="srt://, rtsp://, rtmp:// or tcp:// (MPEG-TS); empty = no automatic push",
    )
    protocol: Literal["", "srt", "rtsp", "rtmp", "tcp", "udp"] = ""
    rendition: str = "main"

    @model_validator(mode="after")
    def _protocol(self) -> PushConfig:
        if self.url:
            scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
            if scheme not in ("srt", "rtsp", "rtsps", "rtmp", "rtmps", "tcp", "udp"):
                raise ValueError(
                    f"push url must start with srt://, rtsp://, rtmp:// or tcp:// (MPEG-TS), "
                    f"not {scheme or self.url!r}"
                )
            if self.protocol and not scheme.startswith(self.protocol):
                raise ValueError(f"protocol {self.protocol!r} does not match the url scheme {scheme!r}")
        return self


class AudioConfig(Strict):
    source: str = Field("", description="alsa:<device> (e.g. alsa:hw:1,0) or lavfi:<graph>; empty = no audio")
    sample_rate: Literal[16000, 22050, 24000, 32000, 44100, 48000] = 48000
    channels: int = Field(1, ge=1, le=2)
    bitrate_kbps: int = Field(64, ge=16, le=320, description="AAC")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v == "" or re.match(r"^alsa:[A-Za-z0-9_:,=.-]{1,100}$", v):
            return v
        if v.startswith("lavfi:") and 6 < len(v) <= 500 and all(32 <= ord(c) < 127 for c in v):
            return v
        raise ValueError(
            f"audio source {v!r} must be alsa:<device> (e.g. alsa:hw:1,0, alsa:default), "
            "lavfi:<filtergraph> or empty"
        )


class CallConfig(Strict):
    """``[media.call]``: the video call with the clerk (edge_media/call/, docs/media.md "The call")."""

    allow_plain_loopback: bool = Field(
        False,
        description="accept ws:// and http:// media servers on a loopback address (tests, the demo); "
        "otherwise the platform's media server must be wss:// or https://",
    )
    size: str = Field("640x360", description="room video sent to the clerk at full quality")
    fps: float = Field(15.0, ge=1.0, le=30.0)
    doccam_size: str = Field("640x480", description="the document camera's live picture sent to the clerk")
    doccam_fps: float = Field(5.0, ge=1.0, le=30.0)
    min_video_kbps: int = Field(
        120, ge=30, le=5000, description="below this uplink estimate the call goes on as audio only"
    )
    reconnect_base_s: float = Field(0.25, ge=0.05, le=10.0)
    reconnect_cap_s: float = Field(
        1.0, ge=0.1, le=30.0, description="retry at least this often, so a returning link is used at once"
    )
    media_timeout_s: float = Field(
        2.5, ge=0.5, le=30.0, description="no packet from the server this long -> reconnect"
    )
    hold_s: float = Field(
        30.0,
        ge=0.0,
        le=55.0,
        description="after media_timeout_s, keep the call's connections this long (from the silence's "
        "start) and go on with them when the server answers again; only then rejoin. Below Janus's "
        "session timeout (60 s); aiortc's ICE gives up by itself after 24-36 s of silence",
    )
    text_fallback_s: float = Field(
        20.0, ge=1.0, le=600.0, description="no media this long -> the call goes on as text (and says so)"
    )
    display: Literal["preview", "command"] = Field(
        "preview",
        description="preview: the clerk only in the UI's preview (tests, the demo); command: raw frames "
        "to display_command (the room TV through the second HDMI output, e.g. mpv on KMS)",
    )
    display_command: list[str] = Field(
        default_factory=lambda: [
            "mpv",
            "--no-config",
            "--really-quiet",
            "--fs",
            "--vo=drm",
            "--drm-connector=HDMI-A-2",
            "--demuxer=rawvideo",
            "--demuxer-rawvideo-w={w}",
            "--demuxer-rawvideo-h={h}",
            "--demuxer-rawvideo-mp-format=yuv420p",
            "--demuxer-rawvideo-fps={fps}",
            "-",
        ],  # fmt: skip
        max_length=40,
        description="with display = command: the program that shows raw yuv420p frames read from stdin",
    )
    speaker: str = Field(
        "",
        description="alsa:<device> (e.g. alsa:default) for the clerk's voice; empty = not played (tests, "
        "the demo without sound)",
    )
    echo_cancel: bool = Field(True, description="cancel the speaker's echo in the microphone's signal")
    echo_tail_ms: int = Field(200, ge=40, le=1000)

    @field_validator("size", "doccam_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @field_validator("speaker")
    @classmethod
    def _speaker(cls, v: str) -> str:
        if v == "" or re.match(r"^alsa:[A-Za-z0-9_:,=.-]{1,100}$", v):
            return v
        raise ValueError(f"speaker {v!r} must be alsa:<device> (e.g. alsa:default, alsa:hw:0,0) or empty")

    @model_validator(mode="after")
    def _backoff(self) -> CallConfig:
        if self.reconnect_cap_s < self.reconnect_base_s:
            raise ValueError("reconnect_cap_s must be at least reconnect_base_s")
        return self


TURN_URL = re.compile(r"^(stun|stuns|turn|turns):[A-Za-z0-9.\-\[\]:]{1,300}(\?transport=(udp|tcp))?$")


# The call's media object comes from the platform as JSON inside a command, whose parameters take no
# type coercion (kiosk_core.commands.Params): a nested model does not inherit that, so it says so itself.
PLATFORM_JSON = ConfigDict(**Strict.model_config, strict=True)


class IceServer(Strict):
    model_config = PLATFORM_JSON

    urls: list[Annotated[str, Field(max_length=320)]] = Field(min_length=1, max_length=8)
    username: Annotated[str, Field(max_length=256)] | None = None
    credential: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v  # WebRTC's RTCIceServer allows one string too

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not TURN_URL.match(url):
                raise ValueError(f"{url[:80]!r} is not a stun:, stuns:, turn: or turns: URL")
        return v


class CallTarget(Strict):
    """Where the call's media goes: the ``media`` object of ``session.call.accepted`` (docs/mqtt.md).

    ``check_url()`` applies the kiosk's policy: TLS (``wss://``, ``https://``) only, unless
    ``[media.call] allow_plain_loopback`` allows ``ws://``/``http://`` to a loopback address. An empty
    ``ice_servers`` means no STUN and no TURN at all, never a public default.
    """

    model_config = PLATFORM_JSON

    kind: Literal["janus-videoroom"]
    url: str = Field(max_length=500)
    room: int = Field(ge=1, le=2**53 - 1)
    token: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    pin: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    display: str = Field(min_length=1, max_length=64, pattern=r"^[\w.:@-]+$")
    ice_servers: list[IceServer] = Field(default_factory=list, max_length=8)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(v)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"url {v[:80]!r} is not a URL: {exc}") from None
        if parts.scheme not in ("wss", "https", "ws", "http") or not host:
            raise ValueError(f"url must be wss://, https:// (or ws://, http:// on loopback), not {v[:80]!r}")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials (use token)")
        return v

    def check_url(self, allow_plain_loopback: bool) -> None:
        """Raise ``ValueError`` if the kiosk may not connect to ``url`` under its policy."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme in ("wss", "https"):
            return
        if not allow_plain_loopback:
            raise ValueError(
                f"url {redact_url(self.url)!r} is not TLS: the kiosk connects to media servers over wss:// "
                "or https:// only ([media.call] allow_plain_loopback allows ws:// and http:// on loopback)"
            )
        if not is_loopback_host(parts.hostname or ""):
            raise ValueError(
                f"url {redact_url(self.url)!r}: plain ws:// or http:// is allowed on a loopback address only"
            )


class MediaConfig(Strict):
    sources: SourcesConfig = SourcesConfig()
    failover: FailoverConfig = FailoverConfig()
    renditions: dict[str, RenditionConfig] = Field(default_factory=lambda: {"main": RenditionConfig()})
    recording: RecordingConfig = RecordingConfig()
    push: PushConfig = PushConfig()
    audio: AudioConfig = AudioConfig()
    call: CallConfig = CallConfig()
    watchdog_stall_s: float = Field(
        1.0, ge=0.2, le=10.0, description="no frame through the pipeline this long -> restart it"
    )
    state_interval_s: float = Field(1.0, ge=0.2, le=60.0, description="retained state/telemetry period")

    @model_validator(mode="after")
    def _references(self) -> MediaConfig:
        if not self.renditions:
            raise ValueError("at least one rendition is needed ([media.renditions.main])")
        for name in self.renditions:
            if not NAME.match(name):
                raise ValueError(f"rendition name {name!r} must be lower-case letters, digits and _")
        for what, name in (
            ("recording.rendition", self.recording.rendition),
            ("push.rendition", self.push.rendition),
        ):
            if name not in self.renditions:
                raise ValueError(
                    f"{what} = {name!r} is not a rendition; have {', '.join(sorted(self.renditions))}"
                )
        scheme = self.push.url.split("://", 1)[0].lower()
        if scheme in ("rtmp", "rtmps") and self.renditions[self.push.rendition].codec == "h265":
            # FFmpeg >= 6.1 writes H.265 in FLV as "enhanced RTMP" (a FourCC codec id); the ingests
            # kiosks meet (Debian's ffmpeg 5.1, nginx-rtmp) cannot decode it, so the push would
            # "work" and show nothing. Refused rather than warned: nobody reads a warning on a kiosk.
            raise _located(
                ("push", "url"),
                redact_url(self.push.url),
                f"push.rendition {self.push.rendition!r} is H.265, and H.265 over RTMP is 'enhanced "
                "RTMP', which common ingests (Debian's ffmpeg 5.1, nginx-rtmp) cannot decode; push "
                "H.265 to tcp:// (MPEG-TS), rtsp:// or srt://, or push an h264 rendition",
            )
        return self


def _located(loc: tuple[str, ...], value: str, message: str) -> ValidationError:
    """A model-level check reported at the key it is about (``media.push.url``), not at ``media``."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(
        "MediaConfig", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


def build_problems(media: MediaConfig) -> list[str]:
    """What this machine's FFmpeg build cannot do of ``media``, as located config problems
    (``media.push.url = ...: ...``). Imports PyAV, so the appliance calls it from ``kiosk config
    check`` only, not on every load; the media process reports the same at start."""
    from edge_media.push_transport import build_problem

    problems = []
    url = media.push.url
    if url:
        problem = build_problem(url.split("://", 1)[0].lower())
        if problem:
            problems.append(f"media.push.url = {redact_url(url)!r}: {problem}")
    return problems


class MediaProcessConfig(SharedConfig):
    """What ``kiosk media run`` reads from the kiosk's file: the shared sections, the cameras of
    ``[drivers]`` and ``[media]``. The appliance validates the rest of the file."""

    drivers: DriversConfig = DriversConfig()
    media: MediaConfig = MediaConfig()


def load(path: str | None = None) -> MediaProcessConfig:
    """Load the media process's view of the kiosk config; raises ``ConfigError`` with every problem."""
    return config.load(MediaProcessConfig, path)
