"""A small **synthetic** audio-visual corpus for the built-in demo.

Nothing here is recorded speech. :func:`generate_demo_corpus` writes a corpus that the real code
paths (prepare, fit, separate, evaluate) can run on when no data is at hand:

* speech from a **source-filter** model (:mod:`.speech`): random syllables grouped into words,
  with speakers (:mod:`.speakers`) that differ by mean pitch, vocal-tract length (formant
  scaling), speaking rate, glottal open quotient and breathiness;
* a pre-cropped **mouth region** video per utterance (:mod:`.mouth_video`; H.264, 25 fps,
  ``yuv420p``): skin-coloured background, lips and a dark mouth opening whose height follows the
  articulation envelope of the sound during each frame and whose width follows the vowel (spread
  for /i/, rounded for /u/), with per-speaker lip shape and colour, small position jitter and
  brightness noise;
* three synthetic noises (:mod:`.noises`): ``fan``, ``babble`` and ``clatter``.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyro_avss.audio import save_audio
from pyro_avss.data.clips import Clip
from pyro_avss.errors import InputError
from pyro_avss.recipes.demo.mouth_video import per_video_frame, render_mouth_frames, write_roi_video
from pyro_avss.recipes.demo.noises import NOISE_TYPES, make_noise
from pyro_avss.recipes.demo.speakers import SPEAKER_PROFILES, SpeakerProfile
from pyro_avss.recipes.demo.speech import synthesize_utterance


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
        *per_video_frame((openness, spread), sample_rate, num_samples, fps), profile,
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
