"""``kiosk media ...``: the kiosk-media process, a one-shot recorder and a camera probe."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _load_config(args: argparse.Namespace, required: bool) -> Any:
    from edge_media import config
    from kiosk_core.errors import ConfigError

    try:
        return config.load(args.config)
    except ConfigError as exc:
        if required:
            print(exc, file=sys.stderr)
            raise SystemExit(2) from None
        return None


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from edge_media.service import serve

    cfg = _load_config(args, required=True)
    # The same journald-friendly, masking format as the appliance (stills may show ID cards).
    from kiosk_core import logs

    logs.setup(cfg.logging.level, cfg.logging.tail_lines)
    return asyncio.run(serve(cfg))


def record(
    main_spec: str,
    backup_spec: str | None,
    out_dir: str,
    seconds: float,
    *,
    cfg: Any = None,
    container: str | None = None,
    audio_spec: str | None = None,
) -> dict[str, Any]:
    """Record ``seconds`` through the same pipeline as the service; returns a summary."""
    import time
    from dataclasses import asdict
    from pathlib import Path

    from edge_media.config import MediaConfig
    from edge_media.encoder import resolve_renditions
    from edge_media.pipeline import Pipeline
    from edge_media.segments import SegmentRecorder
    from edge_media.sources import source_from_spec

    mcfg = cfg.media if cfg is not None else MediaConfig()
    if audio_spec is not None:  # validated like [media.audio] source (raises pydantic's ValidationError)
        mcfg = mcfg.model_copy(
            update={"audio": type(mcfg.audio)(**{**mcfg.audio.model_dump(), "source": audio_spec})}
        )
    rec_cfg = mcfg.recording
    events: list[dict[str, Any]] = []

    def emit(type_: str, data: dict[str, Any]) -> None:
        events.append({"type": type_, **data})
        print(json.dumps({"event": type_, **data}, ensure_ascii=False), flush=True)

    # Before any camera opens: an encoder this machine lacks is one clear error (EncoderUnavailable),
    # or its encoder_fallback, announced like the service does.
    mcfg, choices = resolve_renditions(mcfg, [rec_cfg.rendition])
    for choice in choices:
        if choice.fell_back:
            emit("media.encoder.fallback", asdict(choice))
    rendition = mcfg.renditions[rec_cfg.rendition]
    audio = None
    if mcfg.audio.source:
        from edge_media.audio import AudioSource

        audio = AudioSource(mcfg.audio.source)
    cameras = dict(getattr(cfg.drivers, "camera", None) or {}) if cfg is not None else {}
    sources = {"main": source_from_spec("main", main_spec, cameras)}
    if backup_spec:
        sources["backup"] = source_from_spec("backup", backup_spec, cameras)
    rendition = mcfg.renditions[rec_cfg.rendition]

    recorder = SegmentRecorder(
        Path(out_dir),
        container=container or rec_cfg.container,
        segment_s=rec_cfg.segment_s,
        fragment_s=rec_cfg.fragment_s,
        frame_interval=1 / rendition.fps,
        emit=emit,
    )
    for src in sources.values():
        src.open()
    if audio is not None:
        audio.open()
    pipeline = Pipeline(sources, mcfg, emit=emit, audio=audio)
    pipeline.attach(rec_cfg.rendition, recorder)
    started = time.time()
    print(json.dumps({"event": "recording", "out": str(out_dir), "started": round(started, 3)}), flush=True)
    pipeline.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        pipeline.stop()
        closed = recorder.close()
        for src in sources.values():
            src.close()
        if audio is not None:
            audio.close()
    return {
        "segments": [c.as_dict() for c in closed],
        "frames": pipeline.frames_out,
        "failovers": sum(1 for e in events if e["type"] == "media.failover"),
        "sources": {role: src.stats() for role, src in sources.items()},
        "rendition": pipeline.encoders[rec_cfg.rendition].stats(),
        **(
            {
                "audio": {
                    **audio.stats(),
                    **pipeline.audio_encoder.stats(),
                    "packets_written": recorder.audio_packets,
                }
            }
            if audio is not None
            else {}
        ),
    }


def _cmd_record(args: argparse.Namespace) -> int:
    from kiosk_core.errors import KioskError

    names = [s for s in (args.source, args.backup) if s and not s.startswith(("lavfi:", "/dev/"))]
    cfg = _load_config(args, required=bool(names)) if (names or args.config) else None
    if not 0 < args.seconds <= 86400:
        print("kiosk media record: --seconds must be between 0 and 86400", file=sys.stderr)
        return 2
    if args.audio is not None:
        from pydantic import ValidationError

        from edge_media.config import AudioConfig

        try:
            AudioConfig(source=args.audio)
        except ValidationError as exc:
            print(f"kiosk media record: --audio: {exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
    try:
        summary = record(
            args.source,
            args.backup,
            args.out,
            args.seconds,
            cfg=cfg,
            container=args.container,
            audio_spec=args.audio,
        )
    except KioskError as exc:
        print(f"kiosk media record: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kiosk media record: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "done", **summary}, ensure_ascii=False, default=str), flush=True)
    return 0 if summary["segments"] else 1


def _cmd_probe(args: argparse.Namespace) -> int:
    from drivers.camera.errors import CameraError
    from drivers.camera.v4l2 import probe

    try:
        for line in probe(args.device):
            print(line)
    except CameraError as exc:
        print(f"kiosk media probe: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("media", help="the media process, a one-shot recorder, camera probe")
    sub = p.add_subparsers(dest="media_command", required=True, metavar="ACTION")

    r = sub.add_parser("run", help="run the kiosk-media process (uses --config)")
    r.set_defaults(func=_cmd_run)

    r = sub.add_parser("record", help="record from a source into crash-safe segments")
    r.add_argument(
        "--source", required=True, help="camera name from the config, /dev/videoN, or lavfi:<filtergraph>"
    )
    r.add_argument("--backup", help="a backup source (same forms) for failover")
    r.add_argument("--out", required=True, help="directory for the segments")
    r.add_argument("--seconds", type=float, required=True, help="how long to record")
    r.add_argument("--container", choices=("fmp4", "mpegts"), help="override [media.recording] container")
    r.add_argument(
        "--audio",
        metavar="SPEC",
        help="microphone: alsa:hw:1,0, alsa:default or lavfi:<graph> (overrides [media.audio] source)",
    )
    r.set_defaults(func=_cmd_record)

    r = sub.add_parser("probe", help="list the modes a V4L2 camera offers")
    r.add_argument("device", help="e.g. /dev/video0")
    r.set_defaults(func=_cmd_probe)
