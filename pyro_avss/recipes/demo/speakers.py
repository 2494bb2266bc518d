"""The synthetic speakers of the demo corpus: voice and lip parameters of each."""

from __future__ import annotations

from dataclasses import dataclass


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
