"""The sections a model is trained with (``cli.py fit``): ``stft``, ``data``, ``lips``, ``model``
and ``train``. Each field's default is the default; the comments say what a key does."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingError
from .base import Rule, Section, above, at_least, key, within

#: stay probability of a Markov switch when none is given (about 0.8 s at a 16 ms hop)
DEFAULT_STAY = 0.98


@dataclass
class StftSettings(Section, name="stft"):
    sample_rate: int = key(16000, at_least(1))
    n_fft: int = key(1024, at_least(2))
    hop: int = key(256, at_least(1))
    window: str = key("sine", choices=("sine", "hann"))

    def check(self) -> None:
        if self.hop > self.n_fft:
            raise SettingError("stft.hop", f"must be at most stft.n_fft = {self.n_fft}, got {self.hop}")


@dataclass
class DataSettings(Section, name="data"):
    # corpora: folders or manifest CSVs understood by `cli.py prepare` (GRID folders, the GRID
    # distribution, LibriSpeech-style speaker folders, a generic manifest)
    corpora: list = key([])
    cache: str = "cache"             # where prepared manifests and lip caches go (relative to cwd)
    speakers: list | None = None     # restrict to these speakers (list) or null for all
    train_split: str = "train"
    dev_split: str = "dev"
    max_clips_per_speaker: int | None = key(None, at_least(1))
    detector: str = "auto"           # lip detector used when preparing video


@dataclass
class LipsSettings(Section, name="lips"):
    dim: int = key(24, at_least(1))
    downsample: int = key(32, at_least(1))
    # front_end: pca (the projection is the embedding) | temporal (a learned temporal encoder of
    # the projected ROIs, trained with the universal model; embed_dim is its output size)
    front_end: str = key("temporal", choices=("pca", "temporal"))
    embed_dim: int = key(32, at_least(1))
    # dilations (temporal front end): one residual convolution over time per entry, dilated by
    # it, on the encoder's two base layers (pyro_avss.nets.lips.LipTemporalEncoder); each widens
    # the lip window by ±4·d STFT frames: [] ±12 frames (±190 ms), [4] ±28 (±450 ms)
    dilations: list = key([4], Rule("a list of integers >= 1", lambda ds: all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in ds)))
    # the mouth gate (pyro_avss.nets.lips): a face frame whose mouth region lies more than this
    # many standard deviations (of the training frames) off the projection's subspace counts as
    # a frame without a face; 0: no gate
    gate_sigmas: float = key(5.0, at_least(0))


@dataclass
class ModelSettings(Section, name="model"):
    latent_dim: int = key(16, at_least(1))
    hidden: int = key(128, at_least(1))
    use_video: bool = True
    # prior: standard (z ~ N(0, I)) | visual (z ~ p(z | lips), the conditional-VAE prior)
    prior: str = key("visual", choices=("standard", "visual"))
    # memory: none (z[t] independent over frames) | markov (the same prior chained over frames
    # by a learnt correlation per latent dimension: the speech prior with memory)
    memory: str = key("none", choices=("none", "markov"))
    # audio_only_twins: the saved bank also holds an audio-only twin of every audio-visual decoder
    # (same weights, lips ignored; see DecoderBank.with_audio_only_twins), for lips that go wrong
    audio_only_twins: bool = False


@dataclass
class TrainSettings(Section, name="train"):
    # universal: one decoder on all speakers; speakers: one decoder per speaker, fine-tuned from
    # `init` with the encoder frozen; switching: K decoders trained jointly, switch enumerated;
    # noisy_encoder: the model of `init` plus an encoder for noisy input, distilled from its
    # speech encoder with noise drawn from an NMF prior, that starts separation's guide
    mode: str = key("universal", choices=("universal", "speakers", "switching", "noisy_encoder"))
    init: str | None = None          # path of a model file to start from (speakers/switching)
    num_components: int | None = key(None, at_least(1))  # K for switching mode (null: number of speakers)
    # switching mode: observed (the speakers of the manifest) | hidden (summed out: the decoders
    # discover K clusters) | clustered (each clip's cluster from a Gaussian mixture over clip
    # statistics, then used as its label; see pyro_avss.inference.clip_clusters)
    labels: str = key("observed", choices=("observed", "hidden", "clustered"))
    cluster_dims: int = key(10, at_least(1))     # clustered: principal axes of the clip statistics
                                                 # (set on the GRID training clips)
    cluster_pitch: bool = True       # clustered: the clips' log median pitch as one more dimension
                                     # (pyro_avss.inference.clip_clusters). Training clips outside
                                     # their cluster's majority speaker: GRID 12 -> 0 of 528,
                                     # LibriSpeech 3 -> 4 of 60
    include_universal: bool = False  # speakers mode: keep the initial decoder as an extra component
    switch_prior: str = key("iid", choices=("iid", "markov"))
    stay_prob: float = key(DEFAULT_STAY, within(0, 1, "()"))  # markov switch: probability of
                                     # keeping the same component
    epochs: int = key(60, at_least(1))
    batch_size: int = key(64, at_least(1))       # segments per mini-batch
    segment_frames: int = key(32, at_least(1))   # frames per segment
    lr: float = key(2e-3, above(0))
    beta_start: float = key(0.1, within(0, 1, "(]"))  # KL warm-up: beta grows linearly from this to 1
    warmup_epochs: int = key(5, at_least(0))
    patience: int = key(8, at_least(1))          # early stopping on the dev loss
    lip_dropout: float = key(0.2, within(0, 1))  # probability of hiding the lips of a segment
    perturb: float = key(0.05, at_least(0))      # switching mode: relative noise on the replicated decoders
    max_steps_per_epoch: int | None = key(None, at_least(1))
    # loader: memory (every clip's spectrogram in RAM, segments shuffled over the whole corpus) |
    # stream (clips read from the prepared cache while training: memory does not grow with the
    # corpus; segments shuffled within windows; see pyro_avss.inference.streamed_data)
    loader: str = key("memory", choices=("memory", "stream"))
    workers: int = key(2, at_least(0))           # stream: reading processes (0: the training process)
    stream_window: int = key(8, at_least(1))     # stream: mini-batches whose segments are shuffled together
    seed: int = key(0, at_least(0), Rule("below 2**32", lambda x: x < 2**32))

    def check(self) -> None:
        if self.mode != "universal" and not self.init:
            raise SettingError("train.init", f"mode {self.mode!r} needs train.init (a model file "
                                             "to start from)")
