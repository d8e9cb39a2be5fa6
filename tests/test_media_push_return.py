"""The live push comes back fast: an ingest that goes away for 15 s and returns gets video again
within 2 s of listening, with the push's real (production) backoff, not a test-shortened one.

The ingest is a loopback TCP MPEG-TS receiver run by the test, restartable on the same port; it
stamps the moment it listens again and the moment the first byte of the new connection arrives.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from edge_media.push import LivePush
from tests.test_media_push import Camera, Events, Ingest, feed, feed_until

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

OUTAGE_S = 15.0
RETURN_BUDGET_S = 2.0


def decoded(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height) if frames else (0, 0)


@pytest.mark.timeout(60)
async def test_video_flows_again_within_2_s_of_the_ingest_returning_after_a_15_s_outage(
    tmp_path: Path,
) -> None:
    ingest = Ingest(tmp_path)
    ingest.start()
    camera = Camera(global_header=True)  # as the recorder's encoder: parameter sets only in extradata
    events = Events()
    # The production backoff (250 ms doubling to 30 s, reset after 10 s stable): after 15 s of
    # refused connects its next full attempt may be many seconds away; the probe must not wait for it.
    push = LivePush(ingest.url, emit=events, on_adapt=lambda step: None)
    push.start(camera.encoder)
    try:
        await feed_until(push, camera, events, "media.push.connected", timeout_s=5)
        await feed(push, camera, 1.0)
        ingest.stop()  # the platform's ingest goes away
        await feed_until(push, camera, events, "media.push.lost", timeout_s=5)
        await feed(push, camera, OUTAGE_S)
        during = push.stats()
        assert during["state"] == "retrying" and during["probes"] > 10
        ingest.start()
        await feed_until(push, camera, events, "media.push.connected", 2, timeout_s=10)
        await feed(push, camera, 1.0)
        stats = push.stats()
    finally:
        push.stop()
        camera.close()
        ingest.stop()
    assert len(ingest.files) == 2, "the probe's connection is the stream's: the ingest saw one, not two"
    back_after = ingest.first_byte_at[1] - ingest.listening_at
    print(
        f"outage {OUTAGE_S:.0f} s: video flowing again {back_after * 1000:.0f} ms after the ingest listened"
    )
    assert back_after < RETURN_BUDGET_S
    assert stats["reconnects"] == 1 and len(events.of("media.push.lost")) == 1
    frames, size = decoded(ingest.files[1])  # decodable from the new connection's first packet
    assert size == (320, 240) and frames >= 15
