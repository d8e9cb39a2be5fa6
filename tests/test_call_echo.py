"""The call's echo canceller, as a technician checks it: the clerk talks, the room's speaker plays it, the
microphone hears it 40 ms later at -6 dB; what goes up to the clerk must have the echo taken out and the
villager's voice kept. Voices are sim.speech's seeded speech-like signals (never pure tones: an adaptive
filter converges trivially on those and proves nothing); the room is simulated exactly, so every figure
is measured against the echo and the near end that went in.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_media.call.echo import EchoCanceller, EchoConfigError, EchoInputError
from sim.speech import speech_like, to_int16

FS = 48000


def delayed(x: np.ndarray, delay_s: float, gain_db: float, fs: int = FS) -> np.ndarray:
    """The speaker's sound at the microphone: ``x`` ``delay_s`` later, ``gain_db`` quieter."""
    d = int(round(delay_s * fs))
    out = np.zeros_like(x)
    if d < len(x):
        out[d:] = x[: len(x) - d] * 10 ** (gain_db / 20)
    return out


def run_call(ec: EchoCanceller, far: np.ndarray, mic: np.ndarray) -> np.ndarray:
    """Plays ``far`` and captures ``mic`` block by block as the call's two threads would, in lockstep;
    returns the uplink (float), realigned by the canceller's one block of latency."""
    n = ec.block
    far16, mic16 = to_int16(far), to_int16(mic)
    out = np.zeros(len(mic16), dtype=np.int16)
    for i in range(0, len(mic16) - n + 1, n):
        ec.far_end(far16[i : i + n])
        out[i : i + n] = ec.process(mic16[i : i + n])
    return np.concatenate([out[n:], np.zeros(n, np.int16)]).astype(np.float64) / 32768.0


def db(num: np.ndarray, den: np.ndarray) -> float:
    return float(10 * np.log10((np.sum(num**2) + 1e-20) / (np.sum(den**2) + 1e-20)))


def seconds(a: float, b: float, fs: int = FS) -> slice:
    return slice(int(a * fs), int(b * fs))


@pytest.fixture(scope="module")
def clerk() -> np.ndarray:
    return speech_like(10.0, FS, seed=1, f0=120.0)


@pytest.fixture(scope="module")
def villager() -> np.ndarray:
    return speech_like(10.0, FS, seed=2, f0=210.0, level_dbfs=-26.0)


def test_clerk_echo_40ms_at_minus_6db_is_25db_lower_after_2s(clerk: np.ndarray) -> None:
    # The figure: the simulated path, single talk, measured after 2 s of convergence.
    echo = delayed(clerk[: 6 * FS], 0.040, -6.0)
    for nlp in (False, True):
        ec = EchoCanceller(FS, nlp=nlp)
        up = run_call(ec, clerk[: 6 * FS], echo)
        erle = db(echo[seconds(2, 6)], up[seconds(2, 6)])
        assert erle >= 25.0, f"nlp={nlp}: only {erle:.1f} dB of echo removed"
        st_ = ec.stats()
        assert st_["delay_ms"] == pytest.approx(40.0, abs=1.0)
        assert st_["erle_db"] > 20.0 and st_["adapted"] and st_["far_underruns"] == 0
    # The suppressor adds to the linear stage, it does not replace it.
    assert db(echo[seconds(2, 6)], up[seconds(2, 6)]) >= erle - 0.01


def test_16khz_works_the_same(clerk: np.ndarray) -> None:
    far = speech_like(6.0, 16000, seed=4, f0=120.0)
    echo = delayed(far, 0.040, -6.0, fs=16000)
    ec = EchoCanceller(16000, nlp=False)
    assert ec.block == 160
    up = run_call(ec, far, echo)
    assert db(echo[seconds(2, 6, 16000)], up[seconds(2, 6, 16000)]) >= 25.0


def test_villager_talking_over_the_clerk_is_kept_and_the_filter_does_not_diverge(
    clerk: np.ndarray, villager: np.ndarray
) -> None:
    # 0-4 s the clerk alone (converge), 4-6 s both talk, 6-10 s the clerk alone again.
    near = villager * 0.0
    near[seconds(4, 6)] = villager[seconds(4, 6)]
    echo = delayed(clerk, 0.040, -6.0)
    ec = EchoCanceller(FS)
    flagged = 0
    n = ec.block
    far16, mic16 = to_int16(clerk), to_int16(echo + near)
    out = np.zeros(len(mic16), np.int16)
    for i in range(0, len(mic16) - n + 1, n):
        ec.far_end(far16[i : i + n])
        out[i : i + n] = ec.process(mic16[i : i + n])
        flagged += int(4.2 * FS <= i < 6 * FS and ec.stats()["double_talk"])
    up = np.concatenate([out[n:], np.zeros(n, np.int16)]) / 32768.0
    dt = seconds(4, 6)
    # The villager's voice comes through: what is not their voice (residual echo, distortion, the
    # suppressor's gain) stays 15 dB below it.
    assert db(near[dt], up[dt] - near[dt]) >= 15.0
    assert float(np.corrcoef(near[dt], up[dt])[0, 1]) > 0.97
    # The guard saw it (a good part of the double-talk blocks), and the echo is still cancelled after.
    assert flagged > 0.3 * (1.8 * FS / n)
    before = db(echo[seconds(2, 4)], up[seconds(2, 4)])
    after = db(echo[seconds(6.5, 10)], up[seconds(6.5, 10)])
    assert before >= 25.0 and after >= 25.0, (before, after)


def test_a_changed_echo_path_reconverges(clerk: np.ndarray) -> None:
    # The speaker is moved (or the playback buffering grows): 40 ms becomes 60 ms at 4 s.
    echo = delayed(clerk, 0.040, -6.0)
    echo[seconds(4, 10)] = delayed(clerk, 0.060, -6.0)[seconds(4, 10)]
    ec = EchoCanceller(FS, nlp=False)
    up = run_call(ec, clerk, echo)
    assert db(echo[seconds(2, 4)], up[seconds(2, 4)]) >= 25.0
    assert db(echo[seconds(7, 10)], up[seconds(7, 10)]) >= 22.0
    st_ = ec.stats()
    assert st_["delay_ms"] == pytest.approx(60.0, abs=1.0) and st_["delay_changes"] >= 2


def test_room_reverberation_and_microphone_noise(clerk: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(int(0.05 * FS)) / FS
    # Reflections over 50 ms after the direct sound, 10 dB below it in all (a small, furnished room).
    tail = rng.normal(0, 1, len(t)) * np.exp(-t / 0.015)
    tail *= np.sqrt(0.025 / np.sum(tail**2))
    ir = np.zeros(int(0.04 * FS) + len(t))
    ir[int(0.04 * FS)] = 0.5
    ir[int(0.04 * FS) :] += tail
    far = clerk[: 6 * FS]
    echo = np.convolve(far, ir)[: len(far)]
    noise = rng.normal(0, 10 ** (-50 / 20), len(far))
    ec = EchoCanceller(FS, nlp=False)
    up = run_call(ec, far, echo + noise)
    late = seconds(2, 6)
    # ERLE of the echo itself: what is left of it, with the noise that went in taken out.
    assert db(echo[late], up[late] - noise[late]) >= 20.0


def test_no_far_end_passes_the_microphone_through_bit_exact(villager: np.ndarray) -> None:
    mic = to_int16(villager[: 2 * FS])
    for feed_silence in (False, True):
        ec = EchoCanceller(FS)
        out = []
        for i in range(0, len(mic), 480):
            if feed_silence:
                ec.far_end(np.zeros(480, np.int16))
            out.append(ec.process(mic[i : i + 480]))
        up = np.concatenate(out)
        assert np.array_equal(up[480:], mic[:-480]) and not up[:480].any()  # one block late, exact
        assert not ec.stats()["far_active"]
    assert ec.stats()["far_underruns"] == 0


def test_clerk_pauses_pass_the_villager_through_unchanged(clerk: np.ndarray, villager: np.ndarray) -> None:
    # After convergence the clerk stops (the far end is silence for > the tail): the villager alone is
    # sent up bit-exact, with the filter still holding its echo path.
    far = clerk[: 3 * FS].copy()
    far[int(2 * FS) :] = 0.0
    mic = delayed(far, 0.040, -6.0)
    mic[seconds(2.5, 3)] += villager[seconds(2.5, 3)]
    ec = EchoCanceller(FS)
    up = run_call(ec, far, mic)
    part = seconds(2.5, 2.99)
    assert np.array_equal(to_int16(up[part]), to_int16(mic[part]))


def test_hostile_inputs_give_clear_errors_or_safe_output() -> None:
    with pytest.raises(EchoConfigError, match="sample rate 44100"):
        EchoCanceller(44100)
    with pytest.raises(ValueError, match="tail_ms"):
        EchoCanceller(tail_ms=5000)
    with pytest.raises(ValueError, match="filter_ms"):
        EchoCanceller(tail_ms=100, filter_ms=200)
    ec = EchoCanceller(16000)
    with pytest.raises(EchoInputError, match="int32"):
        ec.process(np.zeros(160, np.int32))
    with pytest.raises(TypeError):
        ec.far_end(np.zeros(160, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        ec.process(np.zeros((2, 2, 2), np.int16))
    assert ec.process(np.zeros(0, np.int16)).shape == (0,)
    ec.far_end(np.zeros(0, np.int16))
    # Floats in [-1, 1] are int16 in another unit; NaN and inf become silence; out-of-range saturates.
    a = EchoCanceller(16000)
    b = EchoCanceller(16000)
    x = speech_like(0.5, 16000, seed=9)
    assert np.array_equal(a.process(x), b.process(to_int16(x)))
    bad = x.copy()
    bad[::7] = np.nan
    bad[3] = np.inf
    bad[5] = 4.0
    out = a.process(bad)
    assert out.dtype == np.int16 and len(out) == len(bad)
    # Stereo (samples, channels) is downmixed; PyAV's packed mono (1, n) is mono.
    c = EchoCanceller(16000)
    s16 = to_int16(x)
    assert np.array_equal(c.process(np.stack([s16, s16], axis=1)), EchoCanceller(16000).process(s16))
    assert len(c.process(s16[None, :])) == len(s16)
    # Full-scale square waves both ways (clipping speaker, clipping microphone): saturates, never wraps.
    sq = np.where(np.arange(16000) % 40 < 20, 32767, -32768).astype(np.int16)
    d = EchoCanceller(16000)
    for i in range(0, 16000, 160):
        d.far_end(sq[i : i + 160])
        o = d.process(sq[i : i + 160])
        assert o.dtype == np.int16
    assert d.stats()["resets"] == 0


def test_far_end_in_bursts_and_stalls(clerk: np.ndarray) -> None:
    far = clerk[: 5 * FS]
    echo = delayed(far, 0.040, -6.0)
    far16, mic16 = to_int16(far), to_int16(echo)
    rng = np.random.default_rng(3)
    # The playback thread hands over 5-40 ms at a time, ahead of the capture by up to 40 ms.
    ec = EchoCanceller(FS, nlp=False)
    fed, out = 0, []
    for i in range(0, len(mic16), 480):
        while fed < min(len(far16), i + 480 + int(rng.integers(0, 1920))):
            k = int(rng.integers(240, 1921))
            ec.far_end(far16[fed : fed + k])
            fed += k
        out.append(ec.process(mic16[i : i + 480]))
    up = np.concatenate(out)[480:] / 32768.0
    assert db(echo[seconds(2, 4.9)], up[seconds(2, 4.9)]) >= 25.0
    assert ec.stats()["far_underruns"] == 0 and ec.stats()["far_dropped"] == 0
    # A stalled playback (the speaker played nothing for 300 ms, nothing was queued) is counted.
    for _ in range(30):
        ec.process(np.zeros(480, np.int16))
    assert ec.stats()["far_underruns"] == 30
    # A burst larger than the ring drops the oldest far samples, and says so.
    small = EchoCanceller(16000, far_buffer_ms=100)
    small.far_end(np.ones(16000 // 10 + 500, np.int16))
    small.far_end(np.ones(100, np.int16))
    assert small.stats()["far_dropped"] == 600


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=25))
def test_any_block_lengths_give_the_same_uplink(chunks: list[int]) -> None:
    # However the capture slices its buffers, the output has the input's length, is int16, and is the
    # very same signal as when processed in one piece (the block buffering is invisible).
    total = sum(chunks)
    far = to_int16(speech_like(total / 16000 + 0.01, 16000, seed=11))[:total]
    mic = to_int16(
        delayed(far / 32768.0, 0.02, -6.0, fs=16000)
        + speech_like(total / 16000 + 0.01, 16000, seed=12)[:total] * 0.1
    )
    whole = EchoCanceller(16000)
    whole.far_end(far)
    ref = whole.process(mic)
    sliced = EchoCanceller(16000)
    sliced.far_end(far)
    pieces, at = [], 0
    for c in chunks:
        o = sliced.process(mic[at : at + c])
        assert o.dtype == np.int16 and o.shape == (c,)
        pieces.append(o)
        at += c
    assert np.array_equal(np.concatenate(pieces), ref)


def test_far_end_from_another_thread_and_reset(clerk: np.ndarray) -> None:
    ec = EchoCanceller(16000)
    far = to_int16(speech_like(2.0, 16000, seed=5))
    mic = to_int16(delayed(far / 32768.0, 0.04, -6.0, fs=16000))
    errors: list[BaseException] = []

    def playback() -> None:
        try:
            for i in range(0, len(far), 160):
                ec.far_end(far[i : i + 160])
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    t = threading.Thread(target=playback)
    t.start()
    out = [ec.process(mic[i : i + 333]) for i in range(0, len(mic), 333)]
    t.join()
    assert not errors and sum(len(o) for o in out) == len(mic)
    assert ec.stats()["blocks"] == len(mic) // 160
    ec.reset()
    s = ec.stats()
    assert s["blocks"] == 0 and s["delay_ms"] is None and s["far_underruns"] == 0
    assert np.array_equal(ec.process(mic[:320])[160:], mic[:160])
