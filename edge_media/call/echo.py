"""In-process acoustic echo cancellation for the call: the clerk's voice from the room's speaker, heard
again by the room's microphone, is taken out of the uplink before it reaches the clerk (and the recording).

Where it sits::

    downlink (clerk) ──► playback thread ──► speaker ──┐ room
                              │ far_end(block)         ▼
    microphone ──► capture ──► process(block) ──► uplink (WebRTC) and recording

``EchoCanceller`` works on mono int16 PCM at 8, 16, 32 or 48 kHz in fixed blocks of 10 ms (``block``
samples). ``process()`` returns as many samples as it is given, delayed by exactly one block (the fixed,
added latency: 10 ms), whatever the lengths of the pieces it is handed.

The algorithm, in four stages per block:

1. **Delay estimator**: the mean magnitude-squared coherence (100 Hz-4 kHz) between the microphone and
   the far end at every lag of 10 ms up to ``tail_ms`` (default 200 ms: the acoustic path plus the
   playback and capture buffering). The lag where the far end is most coherent with the microphone, once
   it has held for 150 ms, places the adaptive filter's window (one block earlier, for fractional delays).
   As in WebRTC AEC3, a short filter behind a delay estimate converges far faster on speech than one
   filter over the whole tail, and costs less.
2. **Linear echo canceller**: a partitioned-block frequency-domain adaptive filter (PBFDAF, the "multi-
   delay filter" of Soo & Pang; Speex's mdf), overlap-save with a 2-block FFT, ``filter_ms`` long (60 ms
   by default: the direct sound and the early reflections), vectorised over the partitions with numpy's
   rfft. The step per partition and bin is a diagonal frequency-domain Kalman gain (Enzner & Vary 2006,
   Kuech et al. 2014): the state's uncertainty over the predicted error power. Bins that speech rarely
   excites keep a large step and the well-known ones take small steps, which is what a normalised (NLMS)
   step gets wrong on speech (measured here: ~5 dB less after 2 s); near-end speech in the error shrinks
   the gain by itself. The gradient is constrained to the first half of the FFT window (a true linear
   convolution, no circular wrap).
3. **Double-talk guard**, two parts. (a) The share of residual echo in the error is estimated from the
   "leak" (Valin 2007: the slope between the error's and the echo estimate's power fluctuations; near-end
   speech does not correlate with the echo estimate); above an 80 % near-end share adaptation is frozen.
   (b) Two filters: a background filter adapts, the foreground filter makes the output; the foreground
   takes the background's weights when its error is lower by more than the comparison's own noise (in
   single talk: lower at all), and a background that drifted away (during double talk) is put back to
   the foreground. A changed echo path moves the delay estimate and the window, and the filter starts
   uncertain again; double talk does not disturb the output filter.
4. **Residual echo suppressor** (NLP), gentle: a broadband gain per block from the same residual-echo
   estimate, ``sqrt(1 - residual share)``, floored at ``-nlp_max_db`` (10 dB by default), ramped across
   the block so it never clicks, raised at once when the near end starts so a syllable is not chopped.
   It uses no look-ahead, so it adds no latency.

With no far end (silence, or nothing sent for the whole tail) the microphone is passed through bit-exact
(one block late) and nothing adapts. Input and output are int16; floats in [-1, 1] are accepted and
scaled (NaN and inf become 0); other dtypes raise ``EchoInputError`` (a ``TypeError``); 2-D arrays are
(samples, channels) and are downmixed by the mean (a (1, n) array is mono); the output saturates to
int16 and is checked finite (a non-finite block resets the filters and passes the microphone through).

Threading: ``far_end()`` is called from the playback side, ``process()`` from the capture side,
``stats()`` from anywhere. The far end goes through a bounded ring buffer (``far_buffer_ms``, 500 ms by
default) under its own short lock, so the playback thread never waits for a block's DSP. Overflow (the
far end arrived more than the ring holds ahead of the microphone) drops the *oldest* far samples and
counts them (``far_dropped``); underrun (a block of microphone with less than a block of far end queued,
once the far end has started) is filled with zeros and counted (``far_underruns``): the speaker played
nothing then, if ``far_end()`` is called when a block is handed to the speaker.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from kiosk_core.errors import MediaError

SAMPLE_RATES = (8000, 16000, 32000, 48000)
BLOCK_MS = 10

_SCALE = 32768.0
# Far-end activity threshold, mean power per sample over the tail (-70 dBFS): quieter than any speaker
# output a microphone could pick up; below it the canceller is a bit-exact pass-through.
_FAR_ACTIVE = 10 ** (-70 / 10)
# Regularisation of the per-bin normalisation, as a power per sample (-80 dBFS): keeps a nearly silent
# bin from getting a huge step.
_DELTA = 10 ** (-80 / 10)
_UNCERTAINTY_START = 0.01  # the filter's prior variance per partition and bin (an echo path of gain < 1)
_UNCERTAINTY_MIN = 1e-6  # never fully certain: the filter can still learn a slowly changing room
_KALMAN_A = 0.999  # the state's forgetting per block
_ADAPTED_AFTER_BLOCKS = 50  # blocks of far-end speech before the double-talk guard is believed
_LEAK_RATE = 0.05  # leak estimator's smoothing, scaled by the echo-to-error power ratio ...
_LEAK_RATE_MAX = 0.02  # ... and at most this (~0.5 s)
_DELAY_SMOOTHING = 0.05  # delay estimator's cross-spectra, ~20 blocks
_DELAY_MIN_COHERENCE = 0.05  # below this mean coherence no lag is believed
_DELAY_CONFIRM_BLOCKS = 15  # a new best lag must hold 150 ms before the filter moves
_PRE_PARTITIONS = 1  # the filter starts one block before the best lag (fractional delays, pre-echo)
_LEAK_MIN = 0.01  # the residual is never believed below -20 dB of the echo estimate (err towards adapting)
_FREEZE_NEAR_SHARE = 0.8  # hard freeze of adaptation above this estimated near-end share of the error
_DOUBLE_TALK_SHARE = 0.5  # stats(): double talk when the near end is more than half of the error


class EchoError(MediaError):
    """The echo canceller's errors."""

    code = "media.echo"


class EchoConfigError(EchoError, ValueError):
    """An unsupported sample rate, tail or buffer length."""

    code = "media.echo.config"


class EchoInputError(EchoError, TypeError):
    """Samples of a type the canceller cannot interpret (not int16 PCM, not float in [-1, 1])."""

    code = "media.echo.input"


def as_mono(samples: Any, *, what: str = "samples") -> np.ndarray:
    """Samples as a 1-D float64 array in [-1, 1): int16 PCM, or float in [-1, 1] (clipped, NaN/inf -> 0).

    2-D arrays are (samples, channels) and are downmixed by the mean; a (1, n) array is mono. Raises
    ``EchoInputError`` for any other dtype (int32 or uint8 PCM is ambiguous in scale: convert it first)
    and ``EchoConfigError`` for arrays of more than two dimensions.
    """
    a = np.asarray(samples)
    if a.dtype == np.int16:
        x = a.astype(np.float64) / _SCALE
    elif a.dtype.kind == "f":
        x = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(x, -1.0, 1.0, out=x)
    else:
        raise EchoInputError(f"{what}: expected int16 PCM or float in [-1, 1], got dtype {a.dtype}")
    if x.ndim == 0:
        raise EchoConfigError(f"{what}: expected an array of samples, got a scalar")
    if x.ndim == 2:
        x = x[0] if x.shape[0] == 1 else x.mean(axis=1)
    elif x.ndim > 2:
        raise EchoConfigError(f"{what}: expected mono (n,) or (samples, channels), got shape {a.shape}")
    return x


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * _SCALE), -32768, 32767).astype(np.int16)


class _FarRing:
    """A bounded FIFO of far-end samples; overflow drops the oldest. Not locked: the owner locks."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity)
        self.start = 0
        self.size = 0

    def push(self, x: np.ndarray) -> int:
        """Appends ``x``; returns how many old samples were dropped to make room."""
        cap = len(self.buf)
        if len(x) >= cap:
            dropped = self.size + len(x) - cap
            self.buf[:] = x[-cap:]
            self.start, self.size = 0, cap
            return dropped
        dropped = max(0, self.size + len(x) - cap)
        if dropped:
            self.start = (self.start + dropped) % cap
            self.size -= dropped
        end = (self.start + self.size) % cap
        first = min(len(x), cap - end)
        self.buf[end : end + first] = x[:first]
        self.buf[: len(x) - first] = x[first:]
        self.size += len(x)
        return dropped

    def pop(self, n: int) -> tuple[np.ndarray, int]:
        """Up to ``n`` oldest samples, zero-padded to ``n``; and how many were really there."""
        got = min(n, self.size)
        out = np.zeros(n)
        cap = len(self.buf)
        first = min(got, cap - self.start)
        out[:first] = self.buf[self.start : self.start + first]
        out[first:got] = self.buf[: got - first]
        self.start = (self.start + got) % cap
        self.size -= got
        return out, got

    def clear(self) -> None:
        self.start = self.size = 0


class EchoCanceller:
    """Cancels the speaker's echo from the microphone; see the module docstring for the whole contract.

    ``sample_rate``: 8000, 16000, 32000 or 48000 Hz. ``tail_ms``: the longest echo path looked for, the
    delay estimator's range (10-1000 ms; 200 by default: the acoustic path plus playback and capture
    buffering). ``filter_ms``: the adaptive filter's length from just before the estimated delay (10 ms to
    ``tail_ms``; 60 by default: the direct sound and the strong early reflections). ``far_buffer_ms``: how
    far the far end may run ahead of the microphone before its oldest samples are dropped. ``nlp``: the
    residual echo suppressor on or off; ``nlp_max_db``: its deepest attenuation (0-40 dB).
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        *,
        tail_ms: float = 200.0,
        filter_ms: float = 60.0,
        far_buffer_ms: float = 500.0,
        nlp: bool = True,
        nlp_max_db: float = 10.0,
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise EchoConfigError(
                f"echo canceller: sample rate {sample_rate!r} Hz is not supported; use one of {SAMPLE_RATES}"
            )
        if not 10.0 <= float(tail_ms) <= 1000.0:
            raise EchoConfigError(f"echo canceller: tail_ms must be 10..1000, got {tail_ms!r}")
        if not 10.0 <= float(filter_ms) <= float(tail_ms):
            raise EchoConfigError(
                f"echo canceller: filter_ms must be 10..tail_ms ({tail_ms}), got {filter_ms!r}"
            )
        if not 0.0 <= float(nlp_max_db) <= 40.0:
            raise EchoConfigError(f"echo canceller: nlp_max_db must be 0..40, got {nlp_max_db!r}")
        self.sample_rate = sample_rate
        self.block = sample_rate * BLOCK_MS // 1000
        self.lags = int(np.ceil(float(tail_ms) / BLOCK_MS))  # far-end history, in blocks
        self.partitions = int(np.ceil(float(filter_ms) / BLOCK_MS))
        self.tail_ms = self.lags * BLOCK_MS
        far_capacity = int(round(float(far_buffer_ms) * sample_rate / 1000))
        if far_capacity < self.block:
            raise EchoConfigError(
                f"echo canceller: far_buffer_ms must hold at least one block ({BLOCK_MS} ms), got {far_buffer_ms!r}"
            )
        self.latency_samples = self.block
        self.nlp = bool(nlp)
        self._nlp_floor = 10 ** (-float(nlp_max_db) / 20)
        # The delay estimator looks at 100 Hz-4 kHz only (bins of 50 Hz at every rate): where speech has
        # its energy, and a fraction of the cost of all bins at 48 kHz.
        self._kd = slice(2, min(self.block, 80) + 1)
        self._far_lock = threading.Lock()
        self._far = _FarRing(far_capacity)
        self._lock = threading.Lock()  # the DSP state: process(), reset(), stats()
        self._reset_state()

    # --- public API ---------------------------------------------------------------------------

    def far_end(self, samples: Any) -> None:
        """Queues what is being sent to the speaker (the reference), any length; thread-safe.

        Call it as each block is handed to the speaker. If the queue would exceed ``far_buffer_ms`` the
        oldest samples are dropped (counted as ``far_dropped``).
        """
        x = as_mono(samples, what="far end")
        if x.size == 0:
            return
        with self._far_lock:
            self._far_dropped += self._far.push(x)
            self._far_started = True

    def process(self, mic: Any) -> np.ndarray:
        """The microphone's samples (any length) -> as many echo-cancelled int16 samples, one block late."""
        d = as_mono(mic, what="microphone")
        with self._lock:
            if d.size:
                self._in = np.concatenate([self._in, d]) if self._in.size else d
            outs = [self._out]
            n_blocks = len(self._in) // self.block
            for i in range(n_blocks):
                outs.append(self._process_block(self._in[i * self.block : (i + 1) * self.block]))
            self._in = self._in[n_blocks * self.block :].copy()
            pending = np.concatenate(outs) if len(outs) > 1 else self._out
            out, self._out = pending[: d.size], pending[d.size :]
            return out

    def stats(self) -> dict[str, Any]:
        """A snapshot: ``erle_db`` (running estimate of the linear stage, over far-end single talk),
        ``delay_ms`` (the echo path's main tap; None until the far end has played), ``double_talk`` (bool,
        now) and ``near_end_share`` (estimated share of the near end in the error, 0-1), ``blocks``,
        ``far_underruns`` (blocks), ``far_dropped`` (samples), ``far_active``, ``adapted``,
        ``nlp_gain_db``, ``filter_updates`` (background -> foreground copies), ``delay_changes``,
        ``resets`` (non-finite recoveries), ``latency_ms``.
        """
        with self._lock:
            delay_ms = None
            if float(np.sum(np.abs(self._wf) ** 2)) > 0.0:
                taps = np.fft.irfft(self._wf, 2 * self.block, axis=1)[:, : self.block].reshape(-1)
                main = self._start * self.block + int(np.argmax(np.abs(taps)))
                delay_ms = round(main * 1000.0 / self.sample_rate, 2)
            erle = (
                10 * np.log10(self._erle_d / self._erle_e) if self._erle_e > 0 and self._erle_d > 0 else 0.0
            )
            with self._far_lock:
                dropped = self._far_dropped
            return {
                "erle_db": round(float(erle), 2),
                "delay_ms": delay_ms,
                "double_talk": self._double_talk,
                "near_end_share": round(float(self._near_share), 3),
                "blocks": self._blocks,
                "far_underruns": self._far_underruns,
                "far_dropped": dropped,
                "far_active": self._far_active,
                "adapted": self._adapted,
                "nlp_gain_db": round(float(20 * np.log10(max(self._gain, 1e-6))), 2),
                "filter_updates": self._filter_updates,
                "delay_changes": self._delay_changes,
                "resets": self._resets,
                "latency_ms": self.latency_samples * 1000.0 / self.sample_rate,
            }

    def reset(self) -> None:
        """Forgets the echo path, the queued far end, the buffered microphone and the counters."""
        with self._lock, self._far_lock:
            self._reset_state()

    # --- the DSP ------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        n, k = self.block, self.block + 1
        self._far.clear()
        self._far_started = False
        self._far_dropped = 0
        self._in = np.zeros(0)
        self._out = np.zeros(n, dtype=np.int16)  # the one block of added latency
        self._x_prev = np.zeros(n)
        self._d_prev = np.zeros(n)
        self._X = np.zeros((self.lags, k), dtype=np.complex128)  # far-end spectra over the tail, newest first
        self._xpow = np.zeros((self.lags, k))  # |X|^2 of the same
        self._far_energy = np.zeros(self.lags)  # energy per far block over the tail
        self._zeros = np.zeros(n)
        self._ramp = (np.arange(n) + 1.0) / n
        self._delta = 2 * n * _DELTA
        self._blocks = 0
        self._far_underruns = 0
        self._resets = 0
        self._reset_filters()

    def _reset_filters(self) -> None:
        """The adaptive state (also after a non-finite block); the far-end history and buffers stay."""
        kd = self._kd.stop - self._kd.start
        self._start = 0  # the filter's first lag (block) in the far-end history
        self._wf = np.zeros((self.partitions, self.block + 1), dtype=np.complex128)  # foreground: output
        self._wb = np.zeros_like(self._wf)  # background: adapts
        # Delay estimator: smoothed cross-spectra far(lag) x mic, and the powers, over the speech band.
        self._sxd = np.zeros((self.lags, kd), dtype=np.complex128)
        self._sxx = np.zeros((self.lags, kd))
        self._sdd = np.zeros(kd)
        self._best_lag = 0
        self._candidate = 0
        self._candidate_blocks = 0
        self._delay_changes = 0
        # Leak estimator: per-bin slow means, then the smoothed covariance and variance sums.
        self._eh = np.zeros(self.block + 1)
        self._yh = np.zeros(self.block + 1)
        self._pey = self._pyy = 1e-12
        self._leak = 1.0
        self._adapt_sum = 0.0
        self._adapted = False
        self._davg1 = self._davg2 = self._dvar1 = self._dvar2 = 0.0
        self._gain = 1.0
        self._erle_d = self._erle_e = 0.0
        self._double_talk = False
        self._near_share = 0.0
        self._far_active = False
        self._filter_updates = 0
        self._unc = np.full((self.partitions, self.block + 1), _UNCERTAINTY_START)  # Kalman state variance
        self._psi = np.zeros(self.block + 1)  # observation noise per bin

    def _estimate_delay(self, d: np.ndarray) -> None:
        """Tracks the lag (in blocks) at which the far end is most coherent with the microphone and moves
        the filter's window there once a new lag has stayed the best for 150 ms."""
        D0 = np.fft.rfft(np.concatenate([self._d_prev, d]))[self._kd]
        self._d_prev = d
        Xd = self._X[:, self._kd]
        a = _DELAY_SMOOTHING
        self._sxd += a * (np.conj(Xd) * D0[None, :] - self._sxd)
        self._sxx += a * (self._xpow[:, self._kd] - self._sxx)
        self._sdd += a * (D0.real**2 + D0.imag**2 - self._sdd)
        coh = np.mean(
            (self._sxd.real**2 + self._sxd.imag**2) / (self._sxx * self._sdd[None, :] + 1e-20), axis=1
        )
        best = int(np.argmax(coh))
        if coh[best] < _DELAY_MIN_COHERENCE or best == self._best_lag:
            self._candidate_blocks = 0
            return
        if best != self._candidate:
            self._candidate, self._candidate_blocks = best, 0
        self._candidate_blocks += 1
        if self._candidate_blocks < _DELAY_CONFIRM_BLOCKS or coh[best] < 1.2 * coh[self._best_lag]:
            return
        self._best_lag = best
        self._candidate_blocks = 0
        start = min(max(0, best - _PRE_PARTITIONS), self.lags - self.partitions)
        shift = start - self._start
        if shift:
            # Keep the taps that stay inside the window (the echo path's absolute lags), zero the rest.
            for w in (self._wf, self._wb):
                moved = np.zeros_like(w)
                lo, hi = max(0, shift), min(self.partitions, self.partitions + shift)
                if lo < hi:
                    moved[lo - shift : hi - shift] = w[lo:hi]
                w[:] = moved
            # A new echo path (the speaker or the microphone moved, the buffering changed): the filter is
            # uncertain again everywhere.
            self._unc[:] = _UNCERTAINTY_START
            self._start = start
            self._delay_changes += 1
            self._adapted = False
            self._adapt_sum = 0.0

    def _process_block(self, d: np.ndarray) -> np.ndarray:
        n = self.block
        self._blocks += 1
        with self._far_lock:
            x, got = self._far.pop(n)
            if got < n and self._far_started:
                self._far_underruns += 1
        # Far-end history: the newest 2-block frame's spectrum goes in front.
        X0 = np.fft.rfft(np.concatenate([self._x_prev, x]))
        self._x_prev = x
        self._X[1:] = self._X[:-1]
        self._X[0] = X0
        self._xpow[1:] = self._xpow[:-1]
        self._xpow[0] = X0.real**2 + X0.imag**2
        self._far_energy[1:] = self._far_energy[:-1]
        self._far_energy[0] = sxx = float(x @ x)
        self._far_active = bool(self._far_energy.sum() > _FAR_ACTIVE * n * self.lags)
        if not self._far_active:
            # Nothing the speaker played can be in the microphone: pass it through, adapt nothing.
            self._d_prev = d
            self._double_talk = False
            self._near_share = 0.0
            self._gain = 1.0
            return _to_int16(d)
        if sxx > _FAR_ACTIVE * n:
            self._estimate_delay(d)
        else:
            self._d_prev = d

        win = slice(self._start, self._start + self.partitions)
        X, xpow = self._X[win], self._xpow[win]
        # Echo estimates of both filters in one go (overlap-save: the last half is the valid part).
        Y = np.einsum("fpk,pk->fk", np.stack([self._wf, self._wb]), X)
        yy = np.fft.irfft(Y, 2 * n, axis=1)[:, n:]
        yf, yb = yy[0], yy[1]
        ef = d - yf
        eb = d - yb
        sff, sbb = float(ef @ ef), float(eb @ eb)
        dbf = float((yf - yb) @ (yf - yb)) + 1e-15

        # Foreground/background: take the background when it is better by more than the noise of the
        # comparison (this block, a short and a longer window), put it back when it drifted away.
        diff = sff - sbb
        self._davg1 = 0.6 * self._davg1 + 0.4 * diff
        self._davg2 = 0.85 * self._davg2 + 0.15 * diff
        self._dvar1 = 0.36 * self._dvar1 + 0.16 * sff * dbf
        self._dvar2 = 0.7225 * self._dvar2 + 0.0225 * sff * dbf
        # In single talk (by the last block's estimate) a background that is better on the short average
        # is simply taken: there is nothing to protect, and the foreground should not lag behind.
        single_talk = self._adapted and self._near_share < 1.0 - _DOUBLE_TALK_SHARE
        take = (
            (single_talk and diff > 0 and self._davg1 > 0)
            or (diff > 0 and diff * diff > sff * dbf)
            or (self._davg1 > 0 and self._davg1**2 > 4 * self._dvar1)
            or (self._davg2 > 0 and self._davg2**2 > 4 * self._dvar2)
        )
        if take:
            self._wf[:] = self._wb
            self._filter_updates += 1
            self._davg1 = self._davg2 = self._dvar1 = self._dvar2 = 0.0
            y = yf + self._ramp * (yb - yf)  # a crossfade over the block: no step in the output
            e = d - y
        else:
            back = (
                (diff < 0 and diff * diff > 8 * sff * dbf)
                or (self._davg1 < 0 and self._davg1**2 > 8 * self._dvar1)
                or (self._davg2 < 0 and self._davg2**2 > 8 * self._dvar2)
            )
            if back:
                self._wb[:] = self._wf
                eb = ef
                self._davg1 = self._davg2 = self._dvar1 = self._dvar2 = 0.0
            y, e = yf, ef

        spectra = np.fft.rfft(np.stack([np.concatenate([self._zeros, a]) for a in (e, y, eb)]), axis=1)
        E, Yo, Eb = spectra
        e2 = E.real**2 + E.imag**2
        y2 = Yo.real**2 + Yo.imag**2
        see, syy = float(e @ e) + 1e-15, float(y @ y)

        # The leak: slope of the error's power fluctuations against the echo estimate's, summed over bins.
        # Near-end speech is uncorrelated with the echo estimate, so it does not bias the slope, only adds
        # noise; the estimator slows down when the error is much louder than the echo estimate.
        self._eh += 0.1 * (e2 - self._eh)
        self._yh += 0.1 * (y2 - self._yh)
        de, dy = e2 - self._eh, y2 - self._yh
        rate = min(_LEAK_RATE_MAX, _LEAK_RATE * syy / see)
        self._pey += rate * (float(de @ dy) - self._pey)
        self._pyy += rate * (float(dy @ dy) - self._pyy)
        if self._pyy > 1e-12:
            self._leak = float(np.clip(self._pey / self._pyy, _LEAK_MIN, 1.0))
        residual = np.minimum(self._leak * y2, e2)
        share = float(residual.sum() / (e2.sum() + 1e-15))  # of residual echo in the error
        self._near_share = 1.0 - share

        if sxx > _FAR_ACTIVE * n:
            self._adapt_sum += 1.0
            if self._adapt_sum > _ADAPTED_AFTER_BLOCKS and self._filter_updates > 0:
                self._adapted = True
        # Double-talk guard, hard part: hold the filter while the near end dominates the error.
        freeze = self._adapted and self._near_share > _FREEZE_NEAR_SHARE
        self._double_talk = bool(self._adapted and self._near_share > _DOUBLE_TALK_SHARE)

        if sxx > _FAR_ACTIVE * n and not freeze:
            # The background's update: a diagonal frequency-domain Kalman filter. Per partition and bin,
            # the gain is the state's uncertainty over the predicted error power (the far end through that
            # uncertainty, plus the observation noise: the smoothed error, near-end speech included). A bin
            # that speech has excited often is known well and takes small steps; one that was rarely
            # excited keeps a large step, which is what makes it converge on speech where a normalised
            # step (NLMS) is slow; and near-end speech in the error shrinks the gain by itself.
            x2 = xpow
            self._psi += 0.5 * (Eb.real**2 + Eb.imag**2 - self._psi)
            gain = self._unc / (np.sum(x2 * self._unc, axis=0) + self._psi + self._delta)[None, :]
            taps = np.fft.irfft(gain * np.conj(X) * Eb[None, :], 2 * n, axis=1)
            taps[:, n:] = 0.0  # the constraint: a linear, not circular, correlation
            self._wb += np.fft.rfft(taps, axis=1)
            # Half the window's samples are constrained away, hence the 0.5 (Kuech et al., 2014).
            self._unc *= 1.0 - 0.5 * gain * x2
            # Prediction: the room changes a little all the time (a slow forgetting), so never be certain.
            self._wb *= _KALMAN_A
            self._unc = _KALMAN_A**2 * self._unc + (1 - _KALMAN_A**2) * (self._wb.real**2 + self._wb.imag**2)
            np.maximum(self._unc, _UNCERTAINTY_MIN, out=self._unc)

        if not self._double_talk and sxx > _FAR_ACTIVE * n:
            self._erle_d = 0.98 * self._erle_d + 0.02 * float(d @ d)
            self._erle_e = 0.98 * self._erle_e + 0.02 * see

        if self.nlp:
            target = max(self._nlp_floor, float(np.sqrt(max(0.0, 1.0 - share))))
            # Up at once (the near end starts talking), down gently (no pumping).
            new = target if target > self._gain else 0.7 * self._gain + 0.3 * target
            e = e * (self._gain + self._ramp * (new - self._gain))
            self._gain = new
        if not np.isfinite(e).all():
            self._resets += 1
            self._reset_filters()
            return _to_int16(d)
        return _to_int16(e)
