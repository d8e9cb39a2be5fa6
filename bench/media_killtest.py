#!/usr/bin/env python3
"""Recovery point after ``kill -9`` of the recorder during recording, repeated (budget: <= 1 s lost,
every segment playable by ffprobe).

    .venv/bin/python bench/media_killtest.py [--runs 20] [--container fmp4|mpegts]

Each run starts ``kiosk media record`` (the one-shot recorder: same pipeline and segment writer as the
service) on a real-time 720p30 lavfi source with 2 s segments and 0.5 s fragments, kills it with
SIGKILL at a random moment 2-4 s in, then checks every segment file with ffprobe (exit 0 and no error
output) and computes what was lost: kill time - end of the recorded video (segment start from its
name + its duration). A kill loses the fragment being built (<= fragment_s) plus the frames in
flight; a power cut additionally loses what was written since the last fsync (every fragment_s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_media.segments import parse_stamp  # noqa: E402

CONFIG = """[device]
id = "bench"
name = "bench"
region = ["33", "3308", "330803", "330803100", "330803100201"]
[media.renditions.main]
threads = 2
[media.recording]
segment_s = 2.0
fragment_s = 0.5
container = "{container}"
"""


def probe(path: Path) -> float | None:
    """Seconds of video; 0.0 for a header-only file (killed before its first fragment); None if ffprobe
    fails or reports any error."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "format=duration,start_time:stream=nb_read_packets",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0 and "moov atom not found" in out.stderr and b"moof" not in path.read_bytes():
        # fMP4 segments write their moov with the first fragment (delay_moov, so they keep the
        # pipeline's timeline): killed before it, a file holds its ftyp and nothing else.
        return 0.0
    if out.returncode != 0 or out.stderr.strip():
        if os.environ.get("KILLTEST_VERBOSE"):
            print(f"  {path.name}: ffprobe rc {out.returncode}: {out.stderr.strip()[:300]}", flush=True)
        return None
    info = json.loads(out.stdout)
    if int(info["streams"][0].get("nb_read_packets", 0)) == 0:
        return 0.0
    # Segments keep the pipeline's timeline (they need not start at 0): the video in the file is its
    # duration less its start time.
    fmt = info["format"]
    return float(fmt["duration"]) - float(fmt.get("start_time", 0.0))


def one_run(tmp: Path, container: str, rng: random.Random) -> tuple[float, int, int, int]:
    cfg = tmp / "kiosk.toml"
    cfg.write_text(CONFIG.format(container=container))
    out = tmp / "rec"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiosk_cli.main",
            "--config",
            str(cfg),
            "media",
            "record",
            "--source",
            "lavfi:testsrc2=size=1280x720:rate=30",
            "--out",
            str(out),
            "--seconds",
            "60",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # {"event": "recording"}
    time.sleep(rng.uniform(2.0, 4.0))
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    segments = sorted(p for p in out.iterdir() if parse_stamp(p.name) is not None)
    ends, bad, empty = [], 0, 0
    for seg in segments:
        d = probe(seg)
        if d is None:
            bad += 1
        elif d == 0.0:
            empty += 1
        else:
            ends.append(parse_stamp(seg.name) + d)  # type: ignore[operator]
    lost = killed_at - max(ends) if ends else float("inf")
    return lost, len(segments), bad, empty


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--container", choices=("fmp4", "mpegts"), default="fmp4")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    losses, segments, bad, empty = [], 0, 0, 0
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
            lost, n, b, e = one_run(Path(tmp), args.container, rng)
        losses.append(lost)
        segments += n
        bad += b
        empty += e
        print(f"run {i + 1}: lost {lost:.3f} s, {n} segments, {b} unplayable, {e} header-only", flush=True)
    losses.sort()
    print()
    print(
        f"| kill -9 during 720p30 recording ({args.container}, 0.5 s fragments), {args.runs} runs | value |"
    )
    print("| --- | --- |")
    print(f"| lost p50 / max | {losses[len(losses) // 2]:.2f} s / {losses[-1]:.2f} s (budget <= 1 s) |")
    print(f"| segments checked / unplayable | {segments} / {bad} |")
    print(
        f"| header-only segments (killed before their first fragment; no video in them, removed "
        f"at the next start) | {empty} |"
    )
    return 0 if losses[-1] <= 1.0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
