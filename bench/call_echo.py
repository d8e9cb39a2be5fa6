#!/usr/bin/env python3
"""Echo return loss enhancement of the call's echo canceller, against SpeexDSP's in the same run.

    .venv/bin/python bench/call_echo.py [--rate 48000] [--seconds 12] [--seeds 3]

The room is simulated: the clerk's voice (sim.speech, speech-like, seeded) goes to the speaker and comes
back into the microphone 40 ms later at -6 dB (the issue's path), or through a short room impulse response
(the direct sound at 40 ms, -6 dB, plus 50 ms of reflections 10 dB below it) with microphone noise at
-50 dBFS. Both cancellers get the same int16 signals in 10 ms frames with a 200 ms tail; SpeexDSP
(``libspeexdsp.so.1``, Debian ``libspeexdsp1``) through ctypes, linear (``speex_echo_cancellation``) and
with its residual echo suppressor (``speex_preprocess_run`` with the echo state, denoise off).

ERLE = 10 log10(echo power / (output - near end) power) after the first 2 s (convergence), so the noise
that went in does not count as echo. "to 20 dB": the first time the ERLE over the next 0.5 s reaches 20
dB. Double talk: the villager talks over the clerk from 4 to 8 s; "near kept" = near-end power over the
power of everything else in the output during it (higher is better); "after" = ERLE from 8.5 s on. In
the room column a suppressor's rows also count the mic noise it took away as residual (conservative). CPU:
process time per second of audio, this machine, one thread. Each figure is the mean over the seeds.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_media.call.echo import EchoCanceller  # noqa: E402
from sim.speech import speech_like, to_int16  # noqa: E402

SPEEX_ECHO_SET_SAMPLING_RATE = 24
SPEEX_PREPROCESS_SET_DENOISE = 0
SPEEX_PREPROCESS_SET_ECHO_STATE = 24


def load_speex() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int16)] * 3
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16)]
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    return lib


def run_ours(far: np.ndarray, mic: np.ndarray, rate: int, nlp: bool) -> tuple[np.ndarray, float]:
    ec = EchoCanceller(rate, tail_ms=200, nlp=nlp)
    n = ec.block
    out = np.zeros_like(mic)
    t0 = time.process_time()
    for i in range(0, len(mic) - n + 1, n):
        ec.far_end(far[i : i + n])
        out[i : i + n] = ec.process(mic[i : i + n])
    cpu = time.process_time() - t0
    lat = ec.latency_samples
    return np.concatenate([out[lat:], np.zeros(lat, np.int16)]), cpu


def run_speex(
    lib: ctypes.CDLL, far: np.ndarray, mic: np.ndarray, rate: int, pp: bool
) -> tuple[np.ndarray, float]:
    n = rate // 100
    ptr = ctypes.POINTER(ctypes.c_int16)
    st = lib.speex_echo_state_init(n, int(0.2 * rate))
    r = ctypes.c_int(rate)
    lib.speex_echo_ctl(st, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(r))
    pre = None
    if pp:
        pre = lib.speex_preprocess_state_init(n, rate)
        # Denoise stays on (the default): the preprocessor applies no gain at all, the echo suppressor's
        # included, when it is off.
        on = ctypes.c_int(1)
        lib.speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_DENOISE, ctypes.byref(on))
        lib.speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(st))
    out = np.zeros_like(mic)
    frame = np.zeros(n, np.int16)
    t0 = time.process_time()
    for i in range(0, len(mic) - n + 1, n):
        rec = np.ascontiguousarray(mic[i : i + n])
        play = np.ascontiguousarray(far[i : i + n])
        lib.speex_echo_cancellation(
            st, rec.ctypes.data_as(ptr), play.ctypes.data_as(ptr), frame.ctypes.data_as(ptr)
        )
        if pre is not None:
            lib.speex_preprocess_run(pre, frame.ctypes.data_as(ptr))
        out[i : i + n] = frame
    cpu = time.process_time() - t0
    if pre is not None:
        lib.speex_preprocess_state_destroy(pre)
        # The preprocessor's overlapping analysis delays its output by one frame (measured: 480 samples
        # at 48 kHz): realign, as for ours.
        out = np.concatenate([out[n:], np.zeros(n, np.int16)])
    lib.speex_echo_state_destroy(st)
    return out, cpu


def db(num: np.ndarray, den: np.ndarray) -> float:
    return float(10 * np.log10((np.sum(num**2) + 1e-20) / (np.sum(den**2) + 1e-20)))


def time_to(echo: np.ndarray, resid: np.ndarray, rate: int, target: float = 20.0) -> float:
    w, hop = rate // 2, rate // 100
    for a in range(0, len(echo) - w, hop):
        if np.sum(echo[a : a + w] ** 2) > 0 and db(echo[a : a + w], resid[a : a + w]) >= target:
            return a / rate
    return float("inf")


def scenarios(rate: int, seconds: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (far, echo, near) as float; the microphone is echo + near."""
    far = speech_like(seconds, rate, seed=seed, f0=120.0)
    d = int(0.04 * rate)
    path = np.zeros_like(far)
    path[d:] = 0.5 * far[:-d]
    rng = np.random.default_rng(100 + seed)
    t = np.arange(int(0.05 * rate)) / rate
    tail = rng.normal(0, 1, len(t)) * np.exp(-t / 0.015)
    tail *= np.sqrt(0.025 / np.sum(tail**2))
    ir = np.zeros(d + len(t))
    ir[d] = 0.5
    ir[d:] += tail
    room = np.convolve(far, ir)[: len(far)]
    noise = rng.normal(0, 10 ** (-50 / 20), len(far))
    villager = speech_like(seconds, rate, seed=50 + seed, f0=210.0, level_dbfs=-26.0)
    near = np.zeros_like(far)
    near[int(4 * rate) : int(8 * rate)] = villager[int(4 * rate) : int(8 * rate)]
    return {"path": (far, path, np.zeros_like(far)), "room": (far, room, noise), "dt": (far, path, near)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rate = args.rate
    lib = load_speex()
    runners: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]] = {
        "ours, linear": lambda f, m: run_ours(f, m, rate, nlp=False),
        "ours, + suppressor": lambda f, m: run_ours(f, m, rate, nlp=True),
    }
    if lib is not None:
        runners["speex, linear"] = lambda f, m: run_speex(lib, f, m, rate, pp=False)
        runners["speex, + preprocess"] = lambda f, m: run_speex(lib, f, m, rate, pp=True)
    cols = ["ERLE 40ms", "to 20 dB", "ERLE room", "DT near kept", "DT after", "CPU s/s"]
    res: dict[str, dict[str, list[float]]] = {k: {c: [] for c in cols} for k in runners}
    conv = slice(2 * rate, None)
    for seed in range(1, args.seeds + 1):
        sc = scenarios(rate, args.seconds, seed)
        for name, run in runners.items():
            r = res[name]
            cpu = audio = 0.0
            for key, (far, echo, near) in sc.items():
                out, c = run(to_int16(far), to_int16(echo + near))
                cpu += c
                audio += len(far) / rate
                o = out.astype(np.float64) / 32768.0
                resid = o - near
                if key == "path":
                    r["ERLE 40ms"].append(db(echo[conv], resid[conv]))
                    r["to 20 dB"].append(time_to(echo, resid, rate))
                elif key == "room":
                    r["ERLE room"].append(db(echo[conv], resid[conv]))
                else:
                    dt = slice(int(4 * rate), int(8 * rate))
                    r["DT near kept"].append(db(near[dt], o[dt] - near[dt]))
                    r["DT after"].append(db(echo[int(8.5 * rate) :], resid[int(8.5 * rate) :]))
            r["CPU s/s"].append(cpu / audio)

    print("$ .venv/bin/python bench/call_echo.py " + " ".join(sys.argv[1:]))
    print(
        f"echo cancellation, {rate} Hz mono int16, 10 ms frames, 200 ms tail, {args.seconds:g} s per scenario, "
        f"{args.seeds} seeds; {platform.machine()} {platform.python_version()} numpy {np.__version__}"
    )
    print(
        "path: 40 ms, -6 dB | room: + reflections, mic noise -50 dBFS | DT: villager 4-8 s (ERLE, near: dB)"
    )
    print(f"{'':22}" + "".join(f"{c:>13}" for c in cols))
    for name in runners:
        cells = []
        for c in cols:
            v = float(np.mean(res[name][c]))
            cells.append(f"{v:13.3f}" if c == "CPU s/s" else f"{v:13.1f}")
        print(f"{name:22}" + "".join(cells))
    if lib is None:
        print(
            "reference not available: install the Debian package libspeexdsp1 (add it to scripts/dev.sh setup)"
        )
    else:
        ours, ref = res["ours, linear"], res["speex, linear"]
        ratio = [float(np.mean(ours[c]) / np.mean(ref[c])) for c in ("ERLE 40ms", "ERLE room", "DT after")]
        print(
            "ours/speex ERLE ratio (linear, dB/dB): path %.2f, room %.2f, after DT %.2f; CPU ours/speex %.1f"
            % (*ratio, float(np.mean(ours["CPU s/s"]) / np.mean(ref["CPU s/s"])))
        )
    goal = float(np.mean(res["ours, linear"]["ERLE 40ms"]))
    print(
        f"goal ERLE >= 25 dB on the 40 ms / -6 dB path after 2 s: {'met' if goal >= 25 else 'NOT met'} ({goal:.1f} dB, linear stage alone)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
