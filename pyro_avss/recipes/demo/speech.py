"""Source-filter speech for the demo corpus, and the mouth movements that go with it.

A Rosenberg glottal pulse train whose pitch follows a speaker-specific mean with declination,
accents, slow drift and jitter, passed through a cascade of four time-varying formant resonators
(second-order IIR sections, coefficients updated every :data:`BLOCK_S`). Utterances are random
syllables (optional consonant: fricative noise, plosive closure and burst, or nasal murmur; then a
vowel from a five-vowel table) grouped into words separated by silences. The mouth openness and
lip spread of every articulation block come from the same plan (:func:`synthesize_utterance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, sosfilt

from pyro_avss.recipes.demo.speakers import SpeakerProfile

BLOCK_S = 0.005  # formant/articulation update period (s)

# Vowel table: formants F1..F4 (Hz, adult male reference), mouth openness (0..1), lip spread
# (relative mouth width).
_VOWELS = {
    "a": ((730.0, 1090.0, 2440.0, 3400.0), 1.00, 1.00),
    "e": ((530.0, 1840.0, 2480.0, 3500.0), 0.65, 1.08),
    "i": ((270.0, 2290.0, 3010.0, 3600.0), 0.40, 1.15),
    "o": ((570.0, 840.0, 2410.0, 3300.0), 0.70, 0.82),
    "u": ((300.0, 870.0, 2240.0, 3300.0), 0.35, 0.74),
}
_VOWEL_BANDWIDTHS = (80.0, 100.0, 140.0, 200.0)
_NASAL_FORMANTS = {"m": (250.0, 1100.0, 2300.0, 3300.0), "n": (250.0, 1700.0, 2600.0, 3400.0)}
_NASAL_BANDWIDTHS = (120.0, 250.0, 300.0, 300.0)

# Consonants: manner, noise band (Hz, before speaker scaling), level relative to the vowels (dB),
# mouth openness and lip spread while it is produced.
_CONSONANTS = {
    "s": ("fricative", (3800.0, 7200.0), -14.0, 0.12, 1.00),
    "sh": ("fricative", (1800.0, 4500.0), -12.0, 0.20, 0.80),
    "f": ("fricative", (1200.0, 6500.0), -22.0, 0.08, 0.95),
    "p": ("plosive", (500.0, 2500.0), -8.0, 0.00, 0.95),
    "t": ("plosive", (3000.0, 6500.0), -8.0, 0.10, 0.95),
    "k": ("plosive", (1500.0, 3500.0), -8.0, 0.12, 0.95),
    "m": ("nasal", None, 0.0, 0.00, 0.92),
    "n": ("nasal", None, 0.0, 0.12, 0.95),
}
_CONSONANT_NAMES = tuple(_CONSONANTS)


@dataclass
class _Segment:
    """One stretch of an utterance: ``kind`` is silence, vowel, fricative, closure, burst or
    nasal; ``phone`` the vowel or consonant; times in seconds; ``amp`` the peak level."""

    kind: str
    phone: str
    start: float
    end: float
    amp: float = 0.0


def synthesize_utterance(rng: np.random.Generator, profile: SpeakerProfile, num_samples: int,
                         sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise one utterance of random syllables.

    :returns: ``(audio, openness, spread)``: audio ``(num_samples,)`` float32 peak-normalised to
        -3.5 dBFS +- 3 dB; mouth openness (0..1) and lip spread (relative width) per 5 ms
        articulation block, both ``(num_blocks,)``, block ``b`` covering samples
        ``[b * block, (b + 1) * block)`` with ``block = round(0.005 * sample_rate)``.
    """
    duration = num_samples / sample_rate
    segments = _plan_segments(rng, profile, duration)
    block = int(round(BLOCK_S * sample_rate))
    num_blocks = -(-num_samples // block)
    voiced_env, noise_envs = _sample_envelopes(segments, num_samples, sample_rate)
    freqs, bws = _formant_tracks(segments, profile, num_blocks, block, sample_rate)
    f0 = _pitch_contour(rng, profile, segments, num_samples, sample_rate)
    source = _glottal_source(rng, profile, f0, sample_rate) * voiced_env
    voiced = _formant_filter(source, freqs, bws, block, sample_rate)
    speech = voiced + _consonant_noise(rng, profile, voiced, voiced_env, noise_envs,
                                       sample_rate)
    level_db = -3.5 + rng.uniform(-3.0, 3.0)
    speech *= 10.0 ** (level_db / 20.0) / max(float(np.max(np.abs(speech))), 1e-9)
    speech += rng.standard_normal(num_samples) * 10.0 ** (-72.0 / 20.0)
    openness, spread = _mouth_tracks(segments, voiced_env, noise_envs, num_blocks, block,
                                     sample_rate)
    return speech.astype(np.float32), openness, spread


def _plan_segments(rng: np.random.Generator, profile: SpeakerProfile,
                   duration: float) -> list[_Segment]:
    """Random syllables grouped into words, with a leading and trailing silence."""
    start = rng.uniform(0.05, 0.2)
    stop = duration - rng.uniform(0.05, 0.15)
    segments = [_Segment("silence", "", 0.0, start)]
    t = start
    while True:
        syllable = _plan_syllable(rng, profile, t)
        if syllable[-1].end > stop:
            if len(segments) == 1:  # always at least one syllable: squeeze it in
                scale = (stop - t) / (syllable[-1].end - t)
                for seg in syllable:
                    seg.start, seg.end = t + (seg.start - t) * scale, t + (seg.end - t) * scale
                segments += syllable
                t = stop
            break
        segments += syllable
        t = syllable[-1].end
        if rng.random() < 0.45:  # word boundary
            gap = rng.uniform(0.08, 0.25) / profile.rate
            segments.append(_Segment("silence", "", t, min(t + gap, stop)))
            t = segments[-1].end
    segments.append(_Segment("silence", "", t, duration))
    return segments


def _plan_syllable(rng: np.random.Generator, profile: SpeakerProfile,
                   t: float) -> list[_Segment]:
    """An optional consonant followed by a vowel, starting at ``t`` seconds."""
    out: list[_Segment] = []
    rate = profile.rate
    if rng.random() < 0.85:
        phone = _CONSONANT_NAMES[rng.integers(len(_CONSONANT_NAMES))]
        manner = _CONSONANTS[phone][0]
        if manner == "plosive":
            closure = t + rng.uniform(0.03, 0.06) / rate
            out.append(_Segment("closure", phone, t, closure))
            out.append(_Segment("burst", phone, closure, closure + rng.uniform(0.012, 0.02)))
        elif manner == "fricative":
            out.append(_Segment("fricative", phone, t, t + rng.uniform(0.06, 0.11) / rate))
        else:
            out.append(_Segment("nasal", phone, t, t + rng.uniform(0.05, 0.09) / rate,
                                amp=rng.uniform(0.2, 0.3)))
        t = out[-1].end
    vowel = "aeiou"[rng.integers(5)]
    out.append(_Segment("vowel", vowel, t, t + rng.uniform(0.11, 0.22) / rate,
                        amp=rng.uniform(0.55, 1.0)))
    return out


def ramp_envelope(n: int, attack: int, decay: int) -> np.ndarray:
    """``(n,)`` raised-cosine attack of ``attack`` samples, flat top, raised-cosine decay."""
    env = np.ones(n)
    attack, decay = min(attack, n // 2), min(decay, n - min(attack, n // 2))
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(attack) + 0.5) / attack)
    if decay > 0:
        env[n - decay:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(decay) + 0.5) / decay)
    return env


def _sample_envelopes(segments: list[_Segment], num_samples: int,
                      sample_rate: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Voicing amplitude ``(N,)`` and one noise amplitude ``(N,)`` per consonant that occurs."""
    voiced = np.zeros(num_samples)
    noise: dict[str, np.ndarray] = {}
    ms = sample_rate // 1000
    for seg in segments:
        a, b = int(round(seg.start * sample_rate)), min(int(round(seg.end * sample_rate)),
                                                         num_samples)
        if b <= a:
            continue
        if seg.kind == "vowel":
            tilt = np.linspace(1.0, 0.8, b - a)  # level falls a little through the vowel
            voiced[a:b] += seg.amp * tilt * ramp_envelope(b - a, 20 * ms, 50 * ms)
        elif seg.kind == "nasal":
            voiced[a:b] += seg.amp * ramp_envelope(b - a, 15 * ms, 10 * ms)
        elif seg.kind in ("fricative", "burst"):
            attack, decay = (15 * ms, 20 * ms) if seg.kind == "fricative" else (ms, (b - a) - ms)
            env = noise.setdefault(seg.phone, np.zeros(num_samples))
            env[a:b] += ramp_envelope(b - a, attack, decay)
    return voiced, noise


def _block_index(t: float, block: int, sample_rate: int) -> int:
    return int(round(t * sample_rate / block))


def _formant_tracks(segments: list[_Segment], profile: SpeakerProfile, num_blocks: int,
                    block: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Formant frequencies and bandwidths (Hz) per block, both ``(num_blocks, 4)``.

    Vowels and nasals set targets; the other blocks hold the previous target (the next one at
    the start), and a 25 ms moving average gives smooth transitions.
    """
    freqs = np.full((num_blocks, 4), np.nan)
    bws = np.full((num_blocks, 4), np.nan)
    for seg in segments:
        if seg.kind not in ("vowel", "nasal"):
            continue
        a, b = _block_index(seg.start, block, sample_rate), _block_index(seg.end, block,
                                                                          sample_rate)
        if seg.kind == "vowel":
            freqs[a:b], bws[a:b] = _VOWELS[seg.phone][0], _VOWEL_BANDWIDTHS
        else:
            freqs[a:b], bws[a:b] = _NASAL_FORMANTS[seg.phone], _NASAL_BANDWIDTHS
    freqs = _fill_holes(freqs, _VOWELS["a"][0])
    bws = _fill_holes(bws, _VOWEL_BANDWIDTHS)
    freqs = uniform_filter1d(freqs * profile.formant_scale, 5, axis=0, mode="nearest")
    bws = uniform_filter1d(bws * math.sqrt(profile.formant_scale), 5, axis=0, mode="nearest")
    return np.minimum(freqs, 0.45 * sample_rate), bws


def _fill_holes(track: np.ndarray, default) -> np.ndarray:
    """Replace NaN rows of ``(T, K)`` by the last valid row (the first valid one at the start;
    ``default`` ``(K,)`` everywhere when no row is valid)."""
    valid = ~np.isnan(track[:, 0])
    if not valid.any():
        return np.broadcast_to(np.asarray(default, dtype=np.float64), track.shape).copy()
    idx = np.where(valid, np.arange(len(track)), 0)
    idx = np.maximum.accumulate(idx)
    idx[: np.argmax(valid)] = np.argmax(valid)
    return track[idx]


def _pitch_contour(rng: np.random.Generator, profile: SpeakerProfile,
                   segments: list[_Segment], num_samples: int, sample_rate: int) -> np.ndarray:
    """F0 (Hz) per sample ``(N,)``: declination, accents on some vowels, drift and jitter."""
    block = int(round(BLOCK_S * sample_rate))
    times = (np.arange(-(-num_samples // block)) + 0.5) * block / sample_rate
    duration = num_samples / sample_rate
    semis = 1.5 - 3.5 * times / duration
    for seg in segments:
        if seg.kind == "vowel" and rng.random() < 0.4:
            centre, width = 0.5 * (seg.start + seg.end), 0.4 * (seg.end - seg.start)
            semis += rng.uniform(0.5, 2.0) * np.exp(-0.5 * ((times - centre) / width) ** 2)
    drift = uniform_filter1d(rng.standard_normal(len(times)), 40, mode="nearest")
    semis += 0.5 * drift / max(float(drift.std()), 1e-9)
    semis += 0.08 * rng.standard_normal(len(times))  # jitter, about 0.5 %
    f0 = profile.f0_hz * 2.0 ** (semis / 12.0)
    return np.interp(np.arange(num_samples) / sample_rate, times, f0)


def _glottal_source(rng: np.random.Generator, profile: SpeakerProfile, f0: np.ndarray,
                    sample_rate: int) -> np.ndarray:
    """Glottal flow derivative (Rosenberg pulse) plus pulse-synchronous breath noise, ``(N,)``.

    The excitation is scaled to unit peak; ``f0`` is in Hz per sample.
    """
    phase = np.cumsum(f0 / sample_rate) + rng.uniform()
    frac = phase - np.floor(phase)
    rise, fall = 0.7 * profile.open_quotient, 0.3 * profile.open_quotient
    flow = np.where(frac < rise, 0.5 - 0.5 * np.cos(np.pi * frac / rise),
                    np.where(frac < rise + fall, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0))
    excitation = np.diff(flow, prepend=flow[0])
    excitation /= max(float(np.max(np.abs(excitation))), 1e-9)
    breath = rng.standard_normal(len(f0)) * (0.3 + flow)
    return excitation + profile.breathiness * breath


def _formant_filter(x: np.ndarray, freqs: np.ndarray, bws: np.ndarray, block: int,
                    sample_rate: int) -> np.ndarray:
    """Cascade of unit-DC-gain two-pole resonators whose coefficients change every block.

    :param x: ``(N,)`` excitation.
    :param freqs, bws: ``(num_blocks, K)`` centre frequencies and bandwidths (Hz).
    :returns: ``(N,)`` filtered signal; the filter state carries across blocks.
    """
    r = np.exp(-np.pi * bws / sample_rate)
    b1 = 2.0 * r * np.cos(2.0 * np.pi * freqs / sample_rate)
    b2 = -(r ** 2)
    sos = np.zeros(freqs.shape + (6,))
    sos[..., 0] = 1.0 - b1 - b2
    sos[..., 3] = 1.0
    sos[..., 4] = -b1
    sos[..., 5] = -b2
    state = np.zeros((freqs.shape[1], 2))
    y = np.empty_like(x)
    for i in range(freqs.shape[0]):
        part = slice(i * block, min((i + 1) * block, len(x)))
        if part.start >= len(x):
            break
        y[part], state = sosfilt(sos[i], x[part], zi=state)
    return y


def _consonant_noise(rng: np.random.Generator, profile: SpeakerProfile, voiced: np.ndarray,
                     voiced_env: np.ndarray, noise_envs: dict[str, np.ndarray],
                     sample_rate: int) -> np.ndarray:
    """Band-passed noise for the fricatives and bursts, ``(N,)``, at each consonant's level
    relative to the RMS of the vowels in ``voiced``."""
    loud = voiced_env > 0.5 * max(float(voiced_env.max()), 1e-9)
    vowel_rms = float(np.sqrt(np.mean(voiced[loud] ** 2))) if loud.any() else 0.1
    out = np.zeros(len(voiced))
    white = rng.standard_normal(len(voiced))
    nyquist = 0.5 * sample_rate
    for phone, env in noise_envs.items():
        _, band, level_db, _, _ = _CONSONANTS[phone]
        low = band[0] * profile.formant_scale
        high = min(band[1] * profile.formant_scale, 0.95 * nyquist)
        sos = butter(2, [low / nyquist, high / nyquist], btype="bandpass", output="sos")
        shaped = sosfilt(sos, white)
        active = env > 0.5
        shaped /= max(float(np.sqrt(np.mean(shaped[active] ** 2))) if active.any() else 1.0,
                      1e-9)
        out += shaped * env * vowel_rms * 10.0 ** (level_db / 20.0)
    return out


def _mouth_tracks(segments: list[_Segment], voiced_env: np.ndarray,
                  noise_envs: dict[str, np.ndarray], num_blocks: int, block: int,
                  sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Mouth openness (0..1) and lip spread per block, both ``(num_blocks,)``.

    Openness is the vowel's openness times the voicing envelope during vowels, the consonant's
    openness (times its noise envelope for fricatives and bursts) during consonants, and 0 in
    silence; spread is the vowel's or consonant's lip spread, 0.92 in silence.
    """
    pad = num_blocks * block - len(voiced_env)
    voicing = np.pad(voiced_env, (0, pad)).reshape(num_blocks, block).mean(axis=1)
    noise = {p: np.pad(e, (0, pad)).reshape(num_blocks, block).mean(axis=1)
             for p, e in noise_envs.items()}
    openness = np.zeros(num_blocks)
    spread = np.full(num_blocks, 0.92)
    for seg in segments:
        a, b = _block_index(seg.start, block, sample_rate), _block_index(seg.end, block,
                                                                          sample_rate)
        if seg.kind == "vowel":
            _, vowel_open, vowel_spread = _VOWELS[seg.phone]
            openness[a:b] = vowel_open * voicing[a:b]
            spread[a:b] = vowel_spread
        elif seg.kind != "silence":
            _, _, _, cons_open, cons_spread = _CONSONANTS[seg.phone]
            level = noise[seg.phone][a:b] if seg.phone in noise else 1.0
            openness[a:b] = cons_open * level
            spread[a:b] = cons_spread
    openness = uniform_filter1d(openness, 4, mode="nearest")
    spread = uniform_filter1d(spread, 10, mode="nearest")
    return np.clip(openness, 0.0, 1.0), spread
