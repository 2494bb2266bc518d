"""A small **synthetic** audio-visual corpus for the built-in demo.

Nothing here is recorded speech. :func:`generate_demo_corpus` writes a corpus that the real code
paths (prepare, fit, separate, evaluate) can run on when no data is at hand:

* speech from a **source-filter** model: a Rosenberg glottal pulse train whose pitch follows a
  speaker-specific mean with declination, accents, slow drift and jitter, passed through a cascade
  of four time-varying formant resonators (second-order IIR sections, coefficients updated every
  5 ms). Utterances are random syllables (optional consonant: fricative noise, plosive closure and
  burst, or nasal murmur; then a vowel from a five-vowel table) grouped into words separated by
  silences. Speakers differ by mean pitch, vocal-tract length (formant scaling), speaking rate,
  glottal open quotient and breathiness;
* a pre-cropped **mouth region** video per utterance (H.264, 25 fps, ``yuv420p``): skin-coloured
  background, lips and a dark mouth opening whose height follows the articulation envelope of the
  sound during each frame and whose width follows the vowel (spread for /i/, rounded for /u/),
  with per-speaker lip shape and colour, small position jitter and brightness noise;
* three synthetic noises: ``fan`` (stationary pink noise plus a mains-like hum), ``babble``
  (speech-shaped noise of six "talkers" with random syllabic envelopes) and ``clatter`` (random
  decaying resonant bursts and clicks over a quiet floor).

Layout written under ``out_dir``::

    audio/<speaker>/<id>.wav     16 kHz mono PCM_16
    video/<speaker>/<id>.mp4     mouth ROI, frame i at pts i/fps, ceil(duration * fps) frames
    noise/<name>.wav
    manifest.csv                 id, speaker, split, audio, video   (paths relative to out_dir)
    noise.csv                    name, audio
    README.txt                   what the corpus is and how it was made

Everything is deterministic given ``seed``: utterance ``k`` of speaker ``s`` draws from its own
random stream ``(seed, s, k)``, so it does not change when the corpus size changes.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, sosfilt

from pyro_avss.audio import save_audio
from pyro_avss.errors import InputError
from pyro_avss.data.clips import Clip

__all__ = [
    "DemoCorpus",
    "SpeakerProfile",
    "SPEAKER_PROFILES",
    "NOISE_TYPES",
    "generate_demo_corpus",
    "synthesize_utterance",
    "render_mouth_frames",
    "write_roi_video",
    "make_noise",
]

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


@dataclass(frozen=True)
class SpeakerProfile:
    """Voice and lip parameters of one synthetic speaker.

    :param name: speaker name used in paths and the manifest.
    :param f0_hz: mean fundamental frequency (Hz).
    :param formant_scale: multiplies every formant (a shorter vocal tract gives > 1).
    :param rate: speaking-rate factor (segment durations are divided by it).
    :param open_quotient: open phase of the glottal pulse as a fraction of the period.
    :param breathiness: level of the aspiration noise relative to the glottal excitation.
    :param mouth_width: half-width of the mouth at rest, as a fraction of the ROI size.
    :param max_open: largest half-height of the mouth opening, as a fraction of the ROI size.
    :param upper_lip, lower_lip: lip thicknesses, fractions of the ROI size.
    :param skin_rgb, lip_rgb: colours (0..255).
    """

    name: str
    f0_hz: float
    formant_scale: float
    rate: float
    open_quotient: float
    breathiness: float
    mouth_width: float
    max_open: float
    upper_lip: float
    lower_lip: float
    skin_rgb: tuple[int, int, int]
    lip_rgb: tuple[int, int, int]


SPEAKER_PROFILES: tuple[SpeakerProfile, ...] = (
    SpeakerProfile("spk1", 105.0, 0.92, 0.95, 0.45, 0.03, 0.31, 0.17, 0.070, 0.095,
                   (196, 150, 124), (150, 84, 80)),
    SpeakerProfile("spk2", 170.0, 1.08, 1.05, 0.55, 0.06, 0.27, 0.15, 0.080, 0.100,
                   (214, 172, 146), (176, 96, 104)),
    SpeakerProfile("spk3", 230.0, 1.20, 1.12, 0.62, 0.08, 0.24, 0.14, 0.065, 0.085,
                   (178, 128, 98), (138, 70, 66)),
    SpeakerProfile("spk4", 135.0, 1.00, 1.00, 0.50, 0.04, 0.29, 0.16, 0.075, 0.090,
                   (205, 160, 135), (160, 90, 90)),
    SpeakerProfile("spk5", 200.0, 1.14, 0.90, 0.58, 0.07, 0.26, 0.15, 0.070, 0.100,
                   (190, 140, 110), (165, 80, 85)),
    SpeakerProfile("spk6", 120.0, 0.96, 1.10, 0.48, 0.05, 0.30, 0.16, 0.080, 0.090,
                   (220, 180, 155), (170, 100, 95)),
)


@dataclass
class DemoCorpus:
    """Where :func:`generate_demo_corpus` put things.

    :param root: the corpus folder.
    :param manifest: ``root/manifest.csv`` (id, speaker, split, audio, video).
    :param noise_csv: ``root/noise.csv`` (name, audio).
    :param noises: ``(name, absolute path)`` of every noise file.
    :param speakers: speaker names.
    :param clips: one :class:`Clip` per utterance, absolute paths.
    """

    root: Path
    manifest: Path
    noise_csv: Path
    noises: list[tuple[str, Path]] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------
def generate_demo_corpus(out_dir: str | Path, *, num_speakers: int = 3,
                         utterances_per_speaker: int = 12, dev_per_speaker: int = 3,
                         duration_s: float = 2.0, sample_rate: int = 16000, fps: int = 25,
                         roi_size: int = 64, noise_seconds: float = 20.0, seed: int = 0,
                         progress: bool = True, overwrite: bool = False) -> DemoCorpus:
    """Write the synthetic audio-visual demo corpus under ``out_dir`` (layout: module docstring).

    :param num_speakers: 1..6 speakers (see :data:`SPEAKER_PROFILES`).
    :param utterances_per_speaker: utterances per speaker, **including** the dev ones.
    :param dev_per_speaker: how many of them (the last ones) are in the ``dev`` split.
    :param duration_s: length of every utterance (s).
    :param sample_rate: audio rate (Hz).
    :param fps: video frame rate (frames/s, integer).
    :param roi_size: width = height of the mouth video (pixels, even).
    :param noise_seconds: length of every noise file (s).
    :param seed: the corpus is a deterministic function of the arguments.
    :param progress: show a progress bar.
    :param overwrite: replace an existing corpus; otherwise an existing ``manifest.csv`` (or any
        file about to be written) is an error.
    :raises ValueError: invalid sizes.
    :raises InputError: output exists and ``overwrite`` is False.
    """
    _check_arguments(num_speakers, utterances_per_speaker, dev_per_speaker, duration_s,
                     sample_rate, fps, roi_size, noise_seconds)
    root = Path(out_dir).expanduser().resolve()
    manifest = root / "manifest.csv"
    noise_csv = root / "noise.csv"
    if manifest.exists() and not overwrite:
        raise InputError(manifest, "a demo corpus already exists here (pass overwrite=True "
                                   "/ --force to regenerate it)")
    from tqdm import tqdm

    profiles = SPEAKER_PROFILES[:num_speakers]
    num_samples = int(round(duration_s * sample_rate))
    bar = tqdm(total=num_speakers * utterances_per_speaker + len(NOISE_TYPES),
               desc="demo corpus", unit="file", disable=not progress)
    clips: list[Clip] = []
    rows = []
    for s, profile in enumerate(profiles):
        for k in range(utterances_per_speaker):
            split = "dev" if k >= utterances_per_speaker - dev_per_speaker else "train"
            clip = _write_clip(root, profile, f"{profile.name}_{k:03d}", split,
                               np.random.default_rng([seed, s, k]), num_samples, sample_rate,
                               fps, roi_size, overwrite)
            rows.append((clip.id, clip.speaker, split,
                         clip.audio.relative_to(root).as_posix(),
                         clip.video.relative_to(root).as_posix()))
            clips.append(clip)
            bar.update()
    noises = []
    for n, name in enumerate(NOISE_TYPES):
        rng = np.random.default_rng([seed, 1000 + n])
        noise = make_noise(name, rng, int(round(noise_seconds * sample_rate)), sample_rate)
        rel = Path("noise") / f"{name}.wav"
        save_audio(root / rel, noise, sample_rate, overwrite=overwrite)
        noises.append((name, rel))
        bar.update()
    bar.close()
    _write_csv(noise_csv, ("name", "audio"), [(n, p.as_posix()) for n, p in noises])
    _write_readme(root / "README.txt", profiles, utterances_per_speaker, dev_per_speaker,
                  duration_s, sample_rate, fps, roi_size, noise_seconds, seed)
    _write_csv(manifest, ("id", "speaker", "split", "audio", "video"), rows)  # last: marks done
    return DemoCorpus(root=root, manifest=manifest, noise_csv=noise_csv,
                      noises=[(n, root / p) for n, p in noises],
                      speakers=[p.name for p in profiles], clips=clips)


def _write_clip(root: Path, profile: SpeakerProfile, uid: str, split: str,
                rng: np.random.Generator, num_samples: int, sample_rate: int, fps: int,
                roi_size: int, overwrite: bool) -> Clip:
    """Synthesise one utterance, render its mouth video and write both files."""
    audio, openness, spread = synthesize_utterance(rng, profile, num_samples, sample_rate)
    frames = render_mouth_frames(
        *_per_video_frame((openness, spread), sample_rate, num_samples, fps), profile,
        roi_size, rng)
    wav = root / "audio" / profile.name / f"{uid}.wav"
    mp4 = root / "video" / profile.name / f"{uid}.mp4"
    save_audio(wav, audio, sample_rate, overwrite=overwrite)
    write_roi_video(mp4, frames, fps, overwrite=overwrite)
    return Clip(id=uid, speaker=profile.name, audio=wav, video=mp4, split=split)


def _check_arguments(num_speakers, utterances_per_speaker, dev_per_speaker, duration_s,
                     sample_rate, fps, roi_size, noise_seconds) -> None:
    if not 1 <= num_speakers <= len(SPEAKER_PROFILES):
        raise ValueError(f"num_speakers must be 1..{len(SPEAKER_PROFILES)}, got {num_speakers}")
    if utterances_per_speaker < 1 or not 0 <= dev_per_speaker < utterances_per_speaker:
        raise ValueError("need utterances_per_speaker >= 1 and 0 <= dev_per_speaker < "
                         f"utterances_per_speaker, got {utterances_per_speaker}, "
                         f"{dev_per_speaker}")
    if duration_s < 0.75:
        raise ValueError(f"duration_s must be at least 0.75 s, got {duration_s}")
    if sample_rate < 16000:
        raise ValueError(f"sample_rate must be at least 16000 Hz, got {sample_rate}")
    if fps < 1 or int(fps) != fps:
        raise ValueError(f"fps must be a positive integer, got {fps}")
    if roi_size < 16 or roi_size % 2:
        raise ValueError(f"roi_size must be an even number >= 16, got {roi_size}")
    if noise_seconds < 1.0:
        raise ValueError(f"noise_seconds must be at least 1 s, got {noise_seconds}")


def _write_csv(path: Path, header: tuple[str, ...], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _write_readme(path: Path, profiles, utterances_per_speaker, dev_per_speaker, duration_s,
                  sample_rate, fps, roi_size, noise_seconds, seed) -> None:
    speakers = "\n".join(
        f"  {p.name}: mean F0 {p.f0_hz:.0f} Hz, formant scale {p.formant_scale:.2f}, "
        f"speaking rate x{p.rate:.2f}" for p in profiles)
    text = f"""\
SYNTHETIC DEMO CORPUS - not recorded speech, not real faces.

Generated by pyro_avss.recipes.demo.corpus.generate_demo_corpus (seed {seed}) so that the
pipeline can be tried on a machine with no data. Results on it say nothing about real
recordings.

Speech: source-filter synthesis. A Rosenberg glottal pulse train (pitch = speaker mean with
declination, accents, slow drift and jitter, plus breath noise) drives four cascaded formant
resonators whose frequencies follow random syllables (consonant: fricative noise, plosive
closure + burst or nasal murmur; vowel from /a e i o u/), grouped into words with silences.
Utterances are peak-normalised to about -3.5 dBFS with a random level of +-3 dB, and carry a
white noise floor at -72 dBFS.
{speakers}
{utterances_per_speaker} utterances per speaker (the last {dev_per_speaker} in split "dev"),
{duration_s:g} s each, {sample_rate} Hz mono 16-bit wav.

Video: a rendered mouth region of interest ({roi_size}x{roi_size} px, {fps} fps, H.264 yuv420p,
frame i at time i/{fps} s): skin background, lips and a dark opening whose height follows the
articulation envelope of the sound during the frame and whose width follows the vowel, with
per-speaker lip shape and colour, position jitter and brightness noise. The videos are already
cropped to the mouth: read them with the front end's "roi" detector mode.

Noise ({noise_seconds:g} s each): fan (pink noise + hum), babble (speech-shaped noise of six
talkers with syllabic envelopes), clatter (random decaying resonant bursts and clicks).

Files: manifest.csv (id, speaker, split, audio, video), noise.csv (name, audio); paths are
relative to this folder.
"""
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# speech synthesis
# --------------------------------------------------------------------------------------------
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


def _ramp_envelope(n: int, attack: int, decay: int) -> np.ndarray:
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
            voiced[a:b] += seg.amp * tilt * _ramp_envelope(b - a, 20 * ms, 50 * ms)
        elif seg.kind == "nasal":
            voiced[a:b] += seg.amp * _ramp_envelope(b - a, 15 * ms, 10 * ms)
        elif seg.kind in ("fricative", "burst"):
            attack, decay = (15 * ms, 20 * ms) if seg.kind == "fricative" else (ms, (b - a) - ms)
            env = noise.setdefault(seg.phone, np.zeros(num_samples))
            env[a:b] += _ramp_envelope(b - a, attack, decay)
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


# --------------------------------------------------------------------------------------------
# video
# --------------------------------------------------------------------------------------------
def _per_video_frame(tracks: tuple[np.ndarray, ...], sample_rate: int, num_samples: int,
                     fps: int) -> tuple[np.ndarray, ...]:
    """Average block tracks ``(num_blocks,)`` over each video frame's interval.

    Frame ``i`` covers ``[i / fps, (i + 1) / fps)``; there are ``ceil(duration * fps)`` frames.
    :returns: one ``(num_frames,)`` array per input track.
    """
    num_frames = -(-num_samples * fps // sample_rate)
    block = int(round(BLOCK_S * sample_rate))
    centres = (np.arange(len(tracks[0])) + 0.5) * block / sample_rate
    frame_of_block = np.minimum((centres * fps).astype(int), num_frames - 1)
    counts = np.bincount(frame_of_block, minlength=num_frames)
    out = []
    for track in tracks:
        sums = np.bincount(frame_of_block, weights=track, minlength=num_frames)
        out.append(np.where(counts > 0, sums / np.maximum(counts, 1), track[-1]))
    return tuple(out)


def _soft_ellipse(dx: np.ndarray, dy: np.ndarray, a, b) -> np.ndarray:
    """Anti-aliased coverage (0..1) of the ellipse with half-axes ``a``, ``b`` (pixels)."""
    a = np.maximum(a, 1e-3)
    b = np.maximum(b, 1e-3)
    level = (dx / a) ** 2 + (dy / b) ** 2 - 1.0
    slope = 2.0 * np.sqrt((dx / a ** 2) ** 2 + (dy / b ** 2) ** 2)
    distance = level / np.maximum(slope, 1e-9)  # first-order signed distance to the edge (px)
    return np.clip(0.5 - distance, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """``(n,)`` unit-variance noise smoothed over ``width`` samples."""
    x = uniform_filter1d(rng.standard_normal(n + 2 * width), width, mode="nearest")[width:-width]
    return x / max(float(x.std()), 1e-9) if n > 1 else np.zeros(n)


def render_mouth_frames(openness: np.ndarray, spread: np.ndarray, profile: SpeakerProfile,
                        roi_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a mouth region of interest per frame.

    :param openness: ``(T,)`` mouth opening 0..1 (0 closed).
    :param spread: ``(T,)`` relative mouth width (about 0.7 rounded .. 1.15 spread).
    :returns: ``(T, roi_size, roi_size, 3)`` uint8 RGB frames: skin, lips, a dark opening
        (and the upper teeth when it is wide open), position jitter, brightness noise.
    """
    layers = _mouth_layers(openness, spread, profile, roi_size, rng)
    skin = np.asarray(profile.skin_rgb, dtype=np.float32)
    lip = np.asarray(profile.lip_rgb, dtype=np.float32)
    img = skin * layers["shade"][..., None]
    for name, colour in (("lips", lip * layers["gloss"][..., None]),
                         ("mouth", np.array([38.0, 14.0, 18.0], dtype=np.float32)),
                         ("teeth", np.array([214.0, 208.0, 196.0], dtype=np.float32))):
        alpha = layers[name][..., None]
        img = img * (1.0 - alpha) + colour * alpha
    gain = (1.0 + 0.03 * _smooth_noise(rng, len(openness), 5)).astype(np.float32)
    img = img * gain[:, None, None, None] + 2.0 * rng.standard_normal(img.shape, np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _mouth_layers(openness: np.ndarray, spread: np.ndarray, profile: SpeakerProfile,
                  size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Coverage maps ``(T, size, size)`` float32 of the mouth drawing.

    ``lips``, ``mouth`` (the dark opening) and ``teeth`` are alpha masks in 0..1; ``shade``
    multiplies the skin colour (light from above, a soft shadow under the lower lip) and
    ``gloss`` the lip colour (a highlight on the lower lip). Lengths scale with ``size / 64``.
    """
    unit = size / 64.0
    o = np.asarray(openness, dtype=np.float32)[:, None, None]
    w = np.asarray(spread, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx = size / 2 + 0.8 * unit * _smooth_noise(rng, len(o), 3)
    cy = 0.55 * size + 0.6 * unit * _smooth_noise(rng, len(o), 3)
    dx = xx[None] - cx.astype(np.float32)[:, None, None]
    dy = yy[None] - cy.astype(np.float32)[:, None, None]

    half_width = profile.mouth_width * size * w * (1.0 - 0.08 * o)
    half_open = 0.4 * unit + o * profile.max_open * size
    top_in, bottom_in = 0.8 * half_open, 1.2 * half_open
    bow = 1.0 - 0.18 * np.exp(-((dx / (3.0 * unit)) ** 2))  # Cupid's bow dip of the upper lip
    b_out = np.where(dy < 0, (top_in + profile.upper_lip * size) * bow,
                     bottom_in + profile.lower_lip * size)
    lips = _soft_ellipse(dx, dy, half_width * 1.1 + 1.5 * unit, b_out)
    mouth = _soft_ellipse(dx, dy, half_width, np.where(dy < 0, top_in, bottom_in)) * lips
    edge = -top_in * np.sqrt(np.clip(1.0 - (dx / half_width) ** 2, 0.0, 1.0))
    teeth_depth = np.clip(0.35 * top_in - 0.5 * unit, 0.0, 2.5 * unit)
    teeth = mouth * np.clip(teeth_depth - (dy - edge) + 0.5, 0.0, 1.0) * (
        np.abs(dx) < 0.6 * half_width)
    chin = bottom_in + profile.lower_lip * size + 3.0 * unit
    shade = (1.06 - 0.14 * yy / size) - 0.08 * np.exp(
        -0.5 * ((dy - chin) / (2.0 * unit)) ** 2 - 0.5 * (dx / (0.8 * half_width)) ** 2)
    lower_lip_middle = bottom_in + 0.5 * profile.lower_lip * size
    gloss = 1.0 + 0.12 * np.exp(-0.5 * ((dy - lower_lip_middle) / (1.5 * unit)) ** 2) * (dy > 0)
    layers = dict(lips=lips, mouth=mouth, teeth=teeth, shade=shade, gloss=gloss)
    return {k: v.astype(np.float32, copy=False) for k, v in layers.items()}


def write_roi_video(path: str | Path, frames: np.ndarray, fps: int, *,
                    overwrite: bool = False) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 (``yuv420p``, CRF 18, no B-frames)
    in an mp4.

    Frame ``i`` gets pts ``i`` in time base ``1/fps``, i.e. it is shown at ``i / fps`` seconds.

    :raises InputError: the file exists and ``overwrite`` is False.
    """
    import av

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists (use --force / overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, int(fps))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        # no B-frames, one thread: measured to make x264's output reproducible byte for byte
        # (with B-frames its lookahead gave different files for the same frames)
        stream.options = {"crf": "18", "preset": "fast", "bf": "0", "threads": "1"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------
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
            env[t:stop] = rng.uniform(0.4, 1.0) * _ramp_envelope(length, 20 * ms, 60 * ms)[
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
