"""The demo corpus's mouth-region videos: frames drawn from the mouth tracks of the speech, and
their H.264 encoding (reproducible byte for byte)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d

from pyro_avss.errors import InputError
from pyro_avss.recipes.demo.speakers import SpeakerProfile
from pyro_avss.recipes.demo.speech import BLOCK_S


def per_video_frame(tracks: tuple[np.ndarray, ...], sample_rate: int, num_samples: int,
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
