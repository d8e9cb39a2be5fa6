#!/usr/bin/env python3
"""Pipeline encode throughput at 720p30 libx264 against the ffmpeg CLI, same source and settings, same run.

    .venv/bin/python bench/media_encode.py [--frames 450] [--rounds 3] [--threads 2]

Both sides encode the same lavfi source (``testsrc2=size=1280x720:rate=30``, yuv420p, generated as
fast as possible) with libx264 ``preset=veryfast tune=zerolatency`` 2000 kbit/s, keyframe every 30
frames, no scene cut, the same thread count, into the same fragmented MP4
(``frag_keyframe+empty_moov+default_base_moof``, 0.5 s fragments). The pipeline side is the real one:
synthetic camera thread -> frame inspection -> selector -> encoder -> crash-safe segment recorder.
Runs alternate (CLI, pipeline, CLI, ...) so both see the same machine load; the ratio uses medians.

Note: the CLI is the system's FFmpeg (Debian 5.1 with its own libx264 build); PyAV bundles its own
FFmpeg and x264. Settings are identical; the libraries' versions are not.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.camera.synthetic import SyntheticCamera  # noqa: E402
from edge_media.config import MediaConfig  # noqa: E402
from edge_media.pipeline import Pipeline  # noqa: E402
from edge_media.segments import SegmentRecorder  # noqa: E402

GRAPH = "testsrc2=size=1280x720:rate=30"


def run_cli(frames: int, threads: int, out: Path) -> float:
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        GRAPH,
        "-frames:v",
        str(frames),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-b:v",
        "2000k",
        "-g",
        "30",
        "-x264-params",
        "keyint=30:min-keyint=30:scenecut=0",
        "-threads",
        str(threads),
        "-pix_fmt",
        "yuv420p",
        "-f",
        "mp4",
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration",
        "500000",
        str(out),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return frames / (time.perf_counter() - started)


def run_pipeline(frames: int, threads: int, out: Path) -> float:
    cfg = MediaConfig.model_validate(
        {
            "renditions": {
                "main": {
                    "threads": threads,
                    "preset": "veryfast",
                    "tune": "zerolatency",
                    "bitrate_kbps": 2000,
                    "gop": 30,
                }
            },
            "recording": {"segment_s": 3600, "fragment_s": 0.5},
        }
    )
    started = time.perf_counter()
    cam = SyntheticCamera(
        "main", GRAPH, framerate=30, size=(1280, 720), paced=False, backpressure=True, queue_frames=8
    )
    cam.open()
    rec = SegmentRecorder(out, segment_s=3600, fragment_s=0.5)
    pipeline = Pipeline({"main": cam}, cfg)
    pipeline.attach("main", rec)
    pipeline.start()
    while pipeline.frames_out < frames:
        time.sleep(0.002)
    pipeline.stop()
    rec.close()
    elapsed = time.perf_counter() - started
    cam.close()
    return frames / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=450)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg CLI not found (apt install ffmpeg)", file=sys.stderr)
        return 2
    cli, ours = [], []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        for r in range(args.rounds):
            cli.append(run_cli(args.frames, args.threads, Path(tmp) / f"cli{r}.mp4"))
            ours.append(run_pipeline(args.frames, args.threads, Path(tmp) / f"pipe{r}"))
            print(f"round {r + 1}: ffmpeg CLI {cli[-1]:.1f} fps, pipeline {ours[-1]:.1f} fps", flush=True)
    c, p = statistics.median(cli), statistics.median(ours)
    print()
    print(
        f"| 720p30 libx264 veryfast/zerolatency 2 Mbit/s, {args.frames} frames, threads={args.threads} "
        "| fps (median of %d) |" % args.rounds
    )
    print("| --- | --- |")
    print(f"| ffmpeg CLI (Debian 5.1) | {c:.1f} |")
    print(f"| kiosk pipeline (PyAV {__import__('av').__version__}) | {p:.1f} |")
    print(f"| ratio pipeline / CLI | {p / c:.2f} (budget >= 0.95) |")
    return 0 if p / c >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
