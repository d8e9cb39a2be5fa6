#!/usr/bin/env python3
"""Capture -> encoded packet latency at 720p30 in real time, p50/p99 (budget: p99 < 50 ms).

    .venv/bin/python bench/media_latency.py [--seconds 20] [--threads 2]

Source: the synthetic camera (lavfi ``testsrc2`` 1280x720, paced at 30 fps; its capture time is the
frame's device timestamp). Path: capture thread -> queue -> frame inspection -> selector -> libx264
``preset=veryfast tune=zerolatency`` (the live rendition's settings: no B-frames, no lookahead, sliced
threads) -> packet. Latency = time the packet leaves the encoder - capture time of its frame. The
first second (encoder warm-up) is left out. A hot backup camera runs alongside, as in the field.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.camera.synthetic import SyntheticCamera  # noqa: E402
from edge_media.config import MediaConfig  # noqa: E402
from edge_media.pipeline import PacketTap, Pipeline  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-backup", action="store_true")
    args = ap.parse_args()
    cfg = MediaConfig.model_validate(
        {"renditions": {"main": {"threads": args.threads, "tune": "zerolatency", "preset": "veryfast"}}}
    )
    sources = {
        "main": SyntheticCamera("main", "testsrc2=size=1280x720:rate=30", framerate=30, size=(1280, 720))
    }
    if not args.no_backup:
        sources["backup"] = SyntheticCamera(
            "backup", "testsrc=size=1280x720:rate=30", framerate=30, size=(1280, 720)
        )
    for s in sources.values():
        s.open()
    pipeline = Pipeline(sources, cfg)
    tap = PacketTap()
    pipeline.attach("main", tap)
    pipeline.start()
    time.sleep(1.0)
    skip = len(tap.latencies_ms)
    time.sleep(args.seconds)
    pipeline.stop()
    for s in sources.values():
        s.close()
    lat = tap.latencies_ms[skip:]
    enc = list(pipeline.encoders["main"].encode_ms)
    print(
        f"| capture -> packet, 720p30 libx264 veryfast/zerolatency, {len(lat)} frames "
        f"{'' if args.no_backup else '(hot backup running)'} | ms |"
    )
    print("| --- | --- |")
    print(f"| p50 | {pct(lat, 50):.1f} |")
    print(f"| p99 | {pct(lat, 99):.1f} (budget < 50) |")
    print(f"| max | {max(lat):.1f} |")
    print(f"| encode time per frame p50 / p99 | {pct(enc, 50):.1f} / {pct(enc, 99):.1f} |")
    print(f"| frames dropped by the capture queue | {sum(s.dropped for s in sources.values())} |")
    return 0 if pct(lat, 99) < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
