"""Model inputs from audio and lip tracks: normalised power spectrograms and aligned lips.

Every consumer (training, separation, evaluation, MCEM) turns a waveform and an optional lip
track into the same tensors through this module:

* ``power (T, F)``: ``|STFT|²`` divided by its mean over the utterance (``scale``), so that
  models never depend on the recording level;
* ``lips (T, Dv)`` and ``present (T,)``: the lip embedding of the video frame nearest to each
  STFT frame centre (by timestamp), zero and ``present = 0`` where no face was found, the
  model's mouth gate finds the mouth region unlike a mouth, or the video does not cover the
  frame. With a learned temporal lip encoder (``temporal``), that
  per-frame projection sequence is then embedded over time (training instead embeds each
  mini-batch itself, since the encoder is being learnt).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..audio import StftConfig, stft
from ..nets.lips import LipProjection, LipTemporalEncoder


@dataclass
class Inputs:
    """Tensors of one utterance (one source's lips)."""

    power: torch.Tensor       # (T, F) normalised power
    scale: float              # mean power that was divided out
    lips: torch.Tensor        # (T, Dv)
    present: torch.Tensor     # (T,) float 0/1


def normalised_power(audio, cfg: StftConfig) -> tuple[torch.Tensor, float]:
    """``(N,)`` waveform -> ``(T, F)`` power divided by its mean, and that mean."""
    power = stft(torch.as_tensor(np.asarray(audio, dtype=np.float32)), cfg).abs().pow(2)
    scale = float(power.mean().clamp_min(1e-12))
    return power / scale, scale


def aligned_lips(track, projection: LipProjection, frame_times: np.ndarray,
                 temporal: LipTemporalEncoder | None = None, gate: bool = True):
    """Lip embedding per STFT frame: ``(T, Dv)`` and ``(T,)`` presence (float).

    ``track`` is a :class:`pyro_avss.video.track.LipTrack` or None (audio only); ``temporal``
    the model's learned temporal lip encoder, applied to the aligned sequence, or None. With
    ``gate`` (and a projection that has one), video frames whose mouth region is not mouth-like
    count as frames without a face (:meth:`~pyro_avss.nets.lips.LipProjection.mouth_like`).
    """
    T = len(frame_times)
    dim = projection.dim if temporal is None else temporal.out_dim
    if track is None or not bool(projection.fitted):
        return torch.zeros(T, dim), torch.zeros(T)
    from ..video.align import align_to_frames

    device = projection.components.device          # the model's device (separation moves it)
    if gate:
        track, _ = screened_track(track, projection)
    found = torch.as_tensor(track.face_found, dtype=torch.bool)
    embedding = projection(torch.as_tensor(track.rois).to(device), found.to(device)).cpu()  # (N, Dv)
    index, valid = align_to_frames(track.timestamps, frame_times, track.face_found, 1.0 / track.fps)
    index = torch.as_tensor(np.asarray(index), dtype=torch.long)
    valid = torch.as_tensor(np.asarray(valid), dtype=torch.bool)
    lips = (embedding[index.clamp(0, embedding.shape[0] - 1)] * valid[:, None]).float()
    if temporal is not None:
        with torch.no_grad():
            param = next(temporal.parameters())
            lips = temporal(lips.to(param), valid.float().to(param)).cpu()
    return lips, valid.float()


def screened_track(track, projection: LipProjection):
    """``(track, stopped)``: ``track`` with the face frames that the projection's mouth gate
    stops marked as frames without a face (the same track without a gate), and the share of
    its face frames stopped."""
    if track is None or not projection.gated or not track.face_found.any():
        return track, 0.0
    found = torch.as_tensor(track.face_found, dtype=torch.bool)
    kept = projection.mouth_like(track.rois, found)
    stopped = float((found & ~kept).sum()) / float(found.sum())
    return (replace(track, face_found=kept.numpy()) if stopped else track), stopped


#: share of a track's face frames above which the mouth gate's verdict is reported: a video
#: unlike the training ones (another camera, another mouth detector) can leave the subspace of
#: the training mouths altogether, and then separation silently reads no lips at all
GATE_WARNING_SHARE = 0.5


def gated_tracks(tracks, projection: LipProjection, what: str) -> list:
    """Each of ``tracks`` (one per source of a recording) through :func:`screened_track`, once,
    with a warning for each source whose stopped share exceeds :data:`GATE_WARNING_SHARE`
    (``what`` names the recording in the message). Pass the result to :func:`aligned_lips`
    with ``gate=False``: the gate is not idempotent (its median centre moves)."""
    import warnings

    out = []
    for i, track in enumerate(tracks):
        screened, stopped = screened_track(track, projection)
        if stopped > GATE_WARNING_SHARE:
            warnings.warn(f"{what}, source {i + 1}: the mouth gate treats {stopped:.0%} of the frames "
                          "with a face as frames without one (their mouth regions look unlike the "
                          "training mouths); if the video is fine, separate with "
                          "separate.lip_gate=false", stacklevel=4)
        out.append(screened)
    return out


def utterance_inputs(audio, track, projection: LipProjection, cfg: StftConfig,
                     start_s: float = 0.0, temporal: LipTemporalEncoder | None = None) -> Inputs:
    """All model inputs of one utterance; ``start_s`` is where ``audio`` starts in the video's
    time line (for chunks of a longer recording: the same trim applies to both streams)."""
    power, scale = normalised_power(audio, cfg)
    times = start_s + cfg.frame_times(power.shape[0])
    lips, present = aligned_lips(track, projection, times, temporal)
    return Inputs(power, scale, lips, present)


def row_inputs(row: dict, projection: LipProjection, cfg: StftConfig, use_video: bool,
               temporal: LipTemporalEncoder | None = None) -> Inputs:
    """Inputs of one prepared-manifest row (``audio`` and, when ``use_video``, its cached
    ``lips`` track); raises ``InputError`` for an unreadable file."""
    from ..audio import load_audio
    from ..video.track import LipTrack

    audio = load_audio(row["audio"], cfg.sample_rate)
    track = LipTrack.load(row["lips"]) if use_video and row.get("lips") else None
    return utterance_inputs(audio, track, projection, cfg, temporal=temporal)
