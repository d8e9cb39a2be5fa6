"""Kiosk UI timing: app start to first screen, and screen change after an intent or a state update.

Everything is real except the terminal: a real mosquitto, the real ``KioskApp`` (Textual, headless, at
the kiosk's 100x30 cells) and, in place of the appliance, a responder on the bus that answers each intent
with the next retained session state (echoing the intent's ``ref``, as the session service does).

    .venv/bin/python bench/ui_timing.py [--runs 10] [--cycles 25]

Measures (budgets from DESIGN.md: start <= 1.5 s, screen change <= 100 ms):

- start -> first screen: ``KioskApp`` created and run, until the retained ``attract`` state is on screen
  (includes connecting to the bus and receiving the retained state; Python start-up and imports are not
  included, see the tmux row for those);
- key -> new screen: a number key pressed until the next screen is mounted, through the bus both ways
  (UI -> intent -> responder -> state -> UI); actions are ``--think`` seconds apart (default 0.3 s, a very
  quick villager), because the kiosk collects the old screen's garbage right after painting a new one;
- intent -> state shown: the UI's own measurement, from publishing the intent to rendering the state
  carrying its ``ref``;
- state -> new screen: a state published by the appliance until the screen it names is mounted;
- process start (tmux): ``kiosk ui`` launched in a 100x30 tmux pane until the first screen is in the pane
  (cold: interpreter, imports, connection), when tmux is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiosk_ui.app import KioskApp  # noqa: E402
from sim.mosquitto import Mosquitto  # noqa: E402
from sim.ui_harness import SAMPLES, Intent, StateFeed, screen_text, wait_until  # noqa: E402

SIZE = (100, 30)
# The responder's script: intent -> next screen (a loop a villager could walk with keys 1, 1, 1, 0).
NEXT = {"wake": "catalog", "select_department": "catalog_items", "select_item": "identify", "end": "attract"}
# start, the first department, its first item (docs/ui.md key map), then end: "0" asks, "0" ends.
KEYS = [("1",), ("2",), ("2",), ("0", "0")]


def stats(samples: list[float]) -> tuple[int, float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return len(ordered), statistics.median(ordered), p95, ordered[-1]


async def start_to_first_screen(port: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        app = KioskApp("127.0.0.1", port)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot, lambda a=app: a.screen_name == "attract", timeout_s=10, what="first screen"
            )
            out.append(time.perf_counter() - t0)
            assert "欢迎使用村级便民服务" in screen_text(app)
    return out


async def screen_changes(
    port: int,
    feed: StateFeed,
    cycles: int,
    think_s: float,
) -> tuple[list[float], list[float], list[float]]:
    async def respond(intent: Intent) -> None:
        screen = NEXT.get(intent.name)
        if screen is not None:
            await feed.publish("session", {**SAMPLES[screen], "ref": intent.body.get("ref")})

    tasks: set[asyncio.Task[None]] = set()

    def on_intent(intent: Intent) -> None:
        task = asyncio.ensure_future(respond(intent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    feed.on_intent = on_intent
    key_to_screen: list[float] = []
    state_to_screen: list[float] = []
    gc.collect()  # what the start-up runs left behind is not this app's to carry
    app = KioskApp("127.0.0.1", port, freeze_gc=True)  # as `kiosk ui` runs it
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen_name == "attract", timeout_s=10, what="attract")
        for _ in range(cycles):
            for *first, key in KEYS:
                for k in first:  # the question before ending: not a screen change, not timed
                    await pilot.press(k)
                    await pilot.pause()
                before = len(app.screen_log)
                t0 = time.perf_counter()
                await pilot.press(key)
                await wait_until(
                    pilot,
                    lambda b=before: len(app.screen_log) > b,
                    timeout_s=5,
                    what=f"next screen after {key} on {app.screen_name} ({feed.intents[-3:]})",
                )
                key_to_screen.append(app.screen_log[-1][0] - t0)
                await pilot.pause(think_s)
        feed.on_intent = None
        for n in range(cycles * 2):
            name = "documents" if n % 2 == 0 else "call_waiting"
            before = len(app.screen_log)
            t0 = time.perf_counter()
            await feed.publish("session", SAMPLES[name])
            await wait_until(pilot, lambda b=before: len(app.screen_log) > b, timeout_s=5, what=name)
            state_to_screen.append(app.screen_log[-1][0] - t0)
            await pilot.pause(think_s)
        intent_to_state = [seconds for _, seconds in app.latencies]
    return key_to_screen, intent_to_state, state_to_screen


def tmux_process_start(port: int, runs: int) -> list[float]:
    if shutil.which("tmux") is None:
        return []
    out = []
    sockdir = tempfile.mkdtemp(prefix="kiosk-ui-bench-")
    tmux = ["tmux", "-S", os.path.join(sockdir, "tmux.sock")]
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    *tmux,
                    "new-session",
                    "-d",
                    "-x",
                    "100",
                    "-y",
                    "30",
                    "-s",
                    "ui",
                    f"cd {ROOT} && LANG=C.UTF-8 {sys.executable} -m kiosk_cli.main ui --bus-port {port}",
                ],
                check=True,
            )
            deadline = t0 + 15
            while time.perf_counter() < deadline:
                pane = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "ui"], capture_output=True, text=True
                ).stdout
                if "欢迎使用村级便民服务" in pane:
                    out.append(time.perf_counter() - t0)
                    break
                time.sleep(0.01)
            subprocess.run([*tmux, "kill-session", "-t", "ui"], capture_output=True)
            time.sleep(0.2)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        shutil.rmtree(sockdir, ignore_errors=True)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="app starts to time")
    parser.add_argument(
        "--cycles", type=int, default=25, help="loops of 4 key presses (and 2x state updates)"
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.3,
        help="seconds between a screen and the next action (a quick villager reads for longer)",
    )
    args = parser.parse_args()
    with Mosquitto(name="ui-bench") as broker:
        async with StateFeed("127.0.0.1", broker.port) as feed:
            await feed.publish("session", SAMPLES["attract"])
            starts = await start_to_first_screen(broker.port, args.runs)
            await feed.publish("session", SAMPLES["attract"])
            keys, intents, states = await screen_changes(broker.port, feed, args.cycles, args.think)
            await feed.publish("session", SAMPLES["attract"])
            cold = tmux_process_start(broker.port, max(1, args.runs // 2))
    rows = [
        ("start -> first screen (in-process)", starts, 1500),
        ("key -> new screen", keys, 100),
        ("intent -> state shown (ref echo)", intents, 100),
        ("state -> new screen", states, 100),
    ]
    if cold:
        rows.append(("process start -> first screen (tmux)", cold, 1500))
    print(f"kiosk UI timing, {SIZE[0]}x{SIZE[1]} cells, real mosquitto, Python {sys.version.split()[0]}")
    print(f"{'measure':<40} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'budget ms':>10}  ok")
    for name, samples, budget in rows:
        n, median, p95, worst = stats(samples)
        ok = "yes" if p95 * 1000 <= budget else "NO"
        print(
            f"{name:<40} {n:>4} {median * 1000:>10.1f} {p95 * 1000:>8.1f} {worst * 1000:>8.1f} {budget:>10}  {ok}"
        )


if __name__ == "__main__":
    asyncio.run(main())
