"""Speech-like test voices in numpy: seeded, deterministic, fast, no external synthesiser.

An adaptive echo canceller converges trivially (and ill-conditioned) on pure tones, so its tests and its
benchmark need signals with the statistics of speech: a glottal pulse train whose pitch wanders, shaped
by moving formants (vowels), unvoiced noise bursts (consonants), syllable-rate loudness and pauses
between phrases. ``speech_like()`` makes one such voice; two different seeds make two talkers (the
clerk and the villager) whose signals are uncorrelated, as double talk needs.

The filtering is done frame by frame in the frequency domain (20 ms Hann frames, 50 % overlap-add) so a
minute of 48 kHz audio takes well under a second; no per-sample Python loop.
"""

from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz of a few vowels (a, i, u, e, o, and the neutral schwa), adult average.
_VOWELS = np.array(
    [
        (730.0, 1090.0, 2440.0),
        (270.0, 2290.0, 3010.0),
        (300.0, 870.0, 2240.0),
        (530.0, 1840.0, 2480.0),
        (570.0, 840.0, 2410.0),
        (500.0, 1500.0, 2500.0),
    ]
)
_BANDWIDTHS = np.array([80.0, 110.0, 160.0])


def speech_like(
    seconds: float,
    sample_rate: int = 48000,
    *,
    seed: int = 0,
    level_dbfs: float = -20.0,
    f0: float = 140.0,
    pauses: bool = True,
) -> np.ndarray:
    """A speech-like voice as float64 samples in [-1, 1], RMS ``level_dbfs`` over its active part.

    ``f0`` is the talker's mean pitch (the clerk ~120 Hz, the villager ~200 Hz say); ``pauses`` puts
    0.2-0.6 s silences between phrases of 1-2.5 s, as a talker breathes. Same arguments, same samples.
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    hop = sample_rate // 100  # 10 ms
    frame = 2 * hop
    n_frames = n // hop + 2
    t_frames = np.arange(n_frames) * hop / sample_rate

    # Pitch: a slow random walk around f0 plus phrase-level declination, sampled per frame.
    walk = np.cumsum(rng.normal(0.0, 0.02, n_frames))
    span = min(50, n_frames)
    walk -= np.convolve(walk, np.ones(span) / span, mode="same")  # keep it wandering, not drifting away
    pitch = f0 * np.exp(0.25 * np.tanh(walk) + 0.1 * np.sin(2 * np.pi * 0.3 * t_frames + rng.uniform(0, 6)))
    pitch_s = np.interp(np.arange(n) / hop, np.arange(n_frames), pitch)
    # Jitter: a real larynx never repeats a period exactly (about 1 % cycle to cycle).
    pitch_s *= 1.0 + 0.01 * np.repeat(rng.normal(0.0, 1.0, n // 40 + 1), 40)[:n]
    phase = np.cumsum(pitch_s / sample_rate)
    # A glottal pulse at every phase wrap, with shimmer (amplitude from cycle to cycle) and aspiration
    # noise (a harmonics-to-noise ratio of ~15 dB, as in a normal voice): without both the voice is a line
    # spectrum, ill-conditioned for an adaptive filter in the way a sum of sines is, which speech is not.
    wraps = np.diff(np.floor(phase), prepend=0.0)
    shimmer = np.exp(0.1 * rng.normal(0.0, 1.0, n))
    excitation_noise = rng.normal(0.0, 1.0, n)
    excitation_voiced = wraps * shimmer * np.sqrt(sample_rate / f0) + 0.18 * excitation_noise

    # Syllables of 120-300 ms, each with a vowel target and sometimes an unvoiced onset.
    vowel_track = np.zeros((n_frames, 3))
    voiced = np.zeros(n_frames)
    unvoiced = np.zeros(n_frames)
    i = 0
    prev = _VOWELS[5]
    while i < n_frames:
        length = int(rng.integers(12, 31))
        target = _VOWELS[rng.integers(0, len(_VOWELS))] * rng.uniform(0.9, 1.1, 3)
        ramp = np.minimum(1.0, np.arange(length) / 5.0)[:, None]
        seg = prev + (target - prev) * ramp
        end = min(n_frames, i + length)
        vowel_track[i:end] = seg[: end - i]
        envelope = np.sin(np.pi * (np.arange(end - i) + 0.5) / length) ** 0.7  # syllable loudness
        if rng.random() < 0.4:  # a fricative or plosive onset
            k = min(end - i, int(rng.integers(3, 8)))
            unvoiced[i : i + k] = rng.uniform(0.3, 0.8)
            envelope[:k] *= np.linspace(0.2, 1.0, k)
        voiced[i:end] = envelope * rng.uniform(0.6, 1.0)
        prev = target
        i = end
    if pauses:
        t = 0.0
        while t < n_frames * hop / sample_rate:
            t += rng.uniform(1.0, 2.5)
            gap = rng.uniform(0.2, 0.6)
            a, b = int(t * 100), int((t + gap) * 100)
            voiced[a:b] = 0.0
            unvoiced[a:b] = 0.0
            t += gap

    # Frame-wise spectral shaping: formant resonances times a glottal tilt for the voiced part, a
    # high-pass colour for the noise part; windowed overlap-add back to a waveform.
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    window = np.hanning(frame + 1)[:-1]
    out = np.zeros(n + 2 * frame)
    pad_v = np.concatenate([excitation_voiced, np.zeros(2 * frame)])
    pad_n = np.concatenate([excitation_noise, np.zeros(2 * frame)])
    # The glottal source falls ~12 dB/octave above ~500 Hz, lip radiation gives back 6; fricatives sit in
    # 2-8 kHz. Nothing of either above ~10 kHz, as in real speech (a 48 kHz mic hears little up there).
    tilt = 1.0 / np.sqrt(1.0 + (freqs / 500.0) ** 2) / (1.0 + (freqs / 10000.0) ** 4)
    hiss = (freqs / 3000.0) ** 2 / (1.0 + (freqs / 3000.0) ** 2) / (1.0 + (freqs / 8000.0) ** 4)
    for j in range(n_frames):
        a = j * hop
        if voiced[j] == 0.0 and unvoiced[j] == 0.0:
            continue
        # A parallel formant synthesiser: resonances added with falling weights, over a small floor.
        env = np.full_like(freqs, 0.02)
        for f, bw, weight in zip(vowel_track[j], _BANDWIDTHS, (1.0, 0.6, 0.3), strict=True):
            env += weight / np.sqrt(1.0 + ((freqs - f) / (bw / 2)) ** 2)
        spec = np.fft.rfft(pad_v[a : a + frame] * window) * env * tilt * voiced[j]
        spec += np.fft.rfft(pad_n[a : a + frame] * window) * hiss * unvoiced[j] * 0.1
        out[a : a + frame] += np.fft.irfft(spec, frame) * window
    x = out[:n]
    active = np.abs(x) > 1e-4 * (np.abs(x).max() + 1e-12)
    rms = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 1.0
    x *= 10 ** (level_dbfs / 20) / max(rms, 1e-12)
    return np.clip(x, -1.0, 1.0)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to saturated int16 PCM."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
