"""The demo corpus's synthetic noises: ``fan`` (stationary pink noise plus a mains-like hum),
``babble`` (speech-shaped noise of six "talkers" with random syllabic envelopes) and ``clatter``
(random decaying resonant bursts and clicks over a quiet floor)."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from pyro_avss.recipes.demo.speech import ramp_envelope


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float,
                    sample_rate: int) -> np.ndarray:
    """``(n,)`` Gaussian noise with power spectrum ~ 1 / f**exponent above 60 Hz (flat below,
    no DC), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum *= np.where(f > 0, np.maximum(f, 60.0) ** (-exponent / 2.0), 0.0)
    x = np.fft.irfft(spectrum, n)
    return x / max(float(x.std()), 1e-12)


def _fan_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Stationary pink noise plus a slowly wobbling hum at 100 Hz and its harmonics."""
    t = np.arange(n) / sample_rate
    hum = sum(a * np.sin(2 * np.pi * h * 100.0 * t + rng.uniform(0, 2 * np.pi))
              for h, a in ((1, 0.25), (2, 0.15), (3, 0.08)))
    wobble = 1.0 + 0.1 * np.sin(2 * np.pi * 0.3 * t)
    return _coloured_noise(rng, n, 1.0, sample_rate) + hum * wobble


def _babble_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Six "talkers": speech-shaped noise, each modulated by random syllabic envelopes."""
    nyquist = 0.5 * sample_rate
    out = np.zeros(n)
    ms = sample_rate // 1000
    for _ in range(6):
        low, high = rng.uniform(120.0, 250.0), rng.uniform(3000.0, 5000.0)
        sos = butter(2, [low / nyquist, high / nyquist], btype="bandpass", output="sos")
        voice = sosfilt(sos, _coloured_noise(rng, n, 1.0, sample_rate))
        env = np.zeros(n)
        t = int(rng.uniform(0.0, 0.5) * sample_rate)
        while t < n:
            length = int(rng.uniform(0.1, 0.25) * sample_rate)
            stop = min(t + length, n)
            env[t:stop] = rng.uniform(0.4, 1.0) * ramp_envelope(length, 20 * ms, 60 * ms)[
                : stop - t]
            t = stop + int(rng.exponential(0.12) * sample_rate)
        out += voice * (0.03 + env)  # distant talkers keep a floor under the gaps
    return out


def _clatter_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Random decaying resonant bursts and clicks (about 3 per second) over a quiet floor."""
    nyquist = 0.5 * sample_rate
    out = 0.003 * _coloured_noise(rng, n, 1.0, sample_rate)
    num_events = rng.poisson(3.0 * n / sample_rate)
    for start in np.sort(rng.integers(0, n, num_events)):
        tau = rng.uniform(0.004, 0.04)
        length = min(int(6 * tau * sample_rate), n - start)
        if length < 8:
            continue
        centre = rng.uniform(800.0, 6000.0)
        width = centre / rng.uniform(3.0, 10.0)
        band = [max(centre - width, 50.0) / nyquist, min(centre + width, 0.95 * nyquist) / nyquist]
        burst = sosfilt(butter(2, band, btype="bandpass", output="sos"),
                        rng.standard_normal(length))
        burst *= np.exp(-np.arange(length) / (tau * sample_rate))
        burst /= max(float(np.max(np.abs(burst))), 1e-12)
        out[start:start + length] += 10.0 ** (rng.uniform(-20.0, 0.0) / 20.0) * burst
    return out


NOISE_TYPES = {"fan": _fan_noise, "babble": _babble_noise, "clatter": _clatter_noise}


def make_noise(name: str, rng: np.random.Generator, num_samples: int,
               sample_rate: int = 16000) -> np.ndarray:
    """One of :data:`NOISE_TYPES` as ``(num_samples,)`` float32, peak-normalised to -3 dBFS."""
    if name not in NOISE_TYPES:
        raise ValueError(f"unknown noise {name!r} (choose from {', '.join(NOISE_TYPES)})")
    x = NOISE_TYPES[name](rng, num_samples, sample_rate)
    x = x * 10.0 ** (-3.0 / 20.0) / max(float(np.max(np.abs(x))), 1e-12)
    return x.astype(np.float32)
