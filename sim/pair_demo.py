"""``kiosk demo --pair``: a main and a backup terminal and the arbiter; fail the main, watch the backup.

Runs the room of :mod:`sim.pair` (root: network namespaces) and shows, on every change, what the room
TV shows, each terminal's role and lease epoch and whether its heartbeat is live. Type a command (or
``kill -9`` the printed pids from another shell)::

    kill main | power off main | power on main | start main | stick main | release main
    partition main|backup|pair | heal main|backup|pair | arbiter restart | card main | status | quit
"""

from __future__ import annotations

import argparse
import contextlib
import select
import shlex
import sys
import time

from sim.pair import SWITCHER_INPUT, TERMINALS, PairLab

HELP = __doc__.split("::", 1)[1].strip("\n") if __doc__ else ""
SAMPLE_CARD = "zhang-san"


def room_line(lab: PairLab) -> str:
    shown = lab.switcher.shown()
    on_tv = next((t for t, i in SWITCHER_INPUT.items() if i == shown), None)
    parts = [f"room TV: {on_tv or 'nothing'} (input {shown})"]
    for name in TERMINALS:
        log = lab.roles(name)
        last = log[-1] if log else {}
        alive = "up" if lab.terminals[name].alive() else "down"
        hb = "hb live" if lab.heartbeat_alive(name, 0.12) else "hb dead"
        parts.append(f"{name}: {last.get('role', '?')} epoch {last.get('lease_epoch', '-')} ({alive}, {hb})")
    return " | ".join(parts)


def act(lab: PairLab, words: list[str]) -> str:
    """Run one typed command; returns what to print."""
    match words:
        case ["kill", t] if t in TERMINALS:
            lab.kill(t)
            return f"{t}: appliance killed (kill -9)"
        case ["power", "off", t] if t in TERMINALS:
            lab.power_off(t)
            return f"{t}: power relay off"
        case ["power", "on", t] if t in TERMINALS:
            lab.power_on(t)
            return f"{t}: powered on"
        case ["start", t] if t in TERMINALS:
            lab.start_appliance(t)
            return f"{t}: appliance started"
        case ["stick", t] if t in TERMINALS:
            lab.stick_heartbeat(t, 0)
            return f"{t}: heartbeat line stuck low"
        case ["release", t] if t in TERMINALS:
            lab.release_heartbeat(t)
            return f"{t}: heartbeat line follows the terminal again"
        case ["partition", w] if w in (*TERMINALS, "pair"):
            lab.partition(w)
            return f"partition: {w}"
        case ["heal", w] if w in (*TERMINALS, "pair"):
            lab.heal(w)
            return f"healed: {w}"
        case ["arbiter", "restart"]:
            lab.restart_arbiter()
            return "arbiter restarted"
        case ["card", t] if t in TERMINALS:
            return f"{t}: card presented (exit {lab.present_card(t, SAMPLE_CARD)})"
        case ["status"] | []:
            return room_line(lab)
        case _:
            return "commands:\n" + HELP


def pids(lab: PairLab) -> str:
    out = []
    for name, term in lab.terminals.items():
        proc = term.procs.get("appliance")
        if proc is not None:
            out.append(f"{name} appliance pid {proc.pid}")
    if lab.arbiter is not None:
        out.append(f"arbiter pid {lab.arbiter.pid}")
    return ", ".join(out)


def main(args: argparse.Namespace) -> int:
    from sim.netns import netns_available

    why = netns_available()
    if why is not None:
        print(f"demo --pair needs network namespaces (run as root): {why}", file=sys.stderr)
        return 1
    lab = PairLab()
    # Commands come from the terminal or a pipe (a script of faults); at the end of a pipe the room
    # keeps running until --seconds or Ctrl-C.
    reading = not args.headless and sys.stdin is not None and not sys.stdin.closed
    try:
        lab.start()
        lab.wait(lambda: any(lab.role_of(t) == "active" for t in TERMINALS), 30, "a terminal active")
        print(f"demo --pair: the room is up in {lab.dir}; {pids(lab)}", flush=True)
        print("type 'help' for commands, or kill -9 a pid above from another shell", flush=True)
        last = ""
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            line = room_line(lab)
            if line != last:
                print(time.strftime("%H:%M:%S"), line, flush=True)
                last = line
            if reading:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
                if ready:
                    typed = sys.stdin.readline()
                    if typed.strip() in ("quit", "exit") or (not typed and sys.stdin.isatty()):
                        break
                    if not typed:
                        reading = False
                        continue
                    print(act(lab, shlex.split(typed)), flush=True)
            else:
                time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    except TimeoutError as exc:
        print(f"demo --pair: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            lab.close()
