"""Deterministic mixtures: specs, levels, rendering, manifests, materialised files."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.data.clips import Clip
from pyro_avss.data.mixture_builder import build_mixture_specs
from pyro_avss.data.mixture_manifest import read_mixture_manifest, write_mixture_manifest
from pyro_avss.data.mixtures import PEAK_LIMIT, materialise, render_mixture
from pyro_avss.data.selection import read_noises
from pyro_avss.errors import InputError

from conftest import data_root, grid_rows

SR = 16000


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(b.astype(np.float64) ** 2))


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid():
    clips = [Clip(r["id"], r["speaker"], Path(r["audio"]), Path(r["video"]), r["split"])
             for r in grid_rows()]
    noises = read_noises(data_root() / "manifests" / "noise.csv")
    s1_dev = [c for c in clips if c.speaker == "s1" and c.split == "dev"][:3]
    s4 = [c for c in clips if c.speaker == "s4"][:6]
    return s1_dev, s4, noises


@pytest.fixture(scope="module")
def two_speaker_specs(grid):
    s1_dev, s4, noises = grid
    return build_mixture_specs(s1_dev, noises, [-5.0, 0.0, 5.0], interferers=s4 + s1_dev,
                               num_interferers=1, sir_db=-2.5, seed=7)


def test_same_seed_gives_identical_specs_and_audio(grid, two_speaker_specs):
    s1_dev, s4, noises = grid
    again = build_mixture_specs(s1_dev, list(reversed(noises)), [-5.0, 0.0, 5.0],
                                interferers=list(reversed(s1_dev + s4)), num_interferers=1,
                                sir_db=-2.5, seed=7)
    assert again == two_speaker_specs  # independent of the order of the pools
    for spec in two_speaker_specs[:2]:
        a, b = render_mixture(spec), render_mixture(spec)
        assert np.array_equal(a.mixture, b.mixture) and np.array_equal(a.sources, b.sources)
    # a target's draw does not depend on the other targets in the list
    alone = build_mixture_specs(s1_dev[1:2], noises, [-5.0, 0.0, 5.0], interferers=s4 + s1_dev,
                                num_interferers=1, sir_db=-2.5, seed=7)
    assert alone == two_speaker_specs[3:6]


def test_different_seed_gives_different_mixtures(grid, two_speaker_specs):
    s1_dev, s4, noises = grid
    other = build_mixture_specs(s1_dev, noises, [-5.0, 0.0, 5.0], interferers=s4 + s1_dev,
                                num_interferers=1, sir_db=-2.5, seed=8)
    starts = [(s.noise.name, s.noise.start) for s in two_speaker_specs]
    assert starts != [(s.noise.name, s.noise.start) for s in other]
    assert not np.array_equal(render_mixture(other[0]).mixture,
                              render_mixture(two_speaker_specs[0]).mixture)


def test_levels_sum_and_peak(two_speaker_specs):
    assert len(two_speaker_specs) == 9
    scaled_down = 0
    for spec in two_speaker_specs:
        r = render_mixture(spec)
        assert spec.condition == "2spk" and spec.num_sources == 2
        assert spec.sources[1].speaker != spec.sources[0].speaker  # never the target's speaker
        assert r.mixture.dtype == r.sources.dtype == r.noise.dtype == np.float32
        assert r.sources.shape == (2, spec.num_samples) and r.mixture.shape == (spec.num_samples,)
        assert abs(_db(r.sources[0], r.noise) - spec.snr_db) < 1e-3
        assert abs(_db(r.sources[0], r.sources[1]) - spec.sir_db) < 1e-3
        assert np.array_equal(r.mixture, r.sources.sum(0) + r.noise)
        assert max(np.abs(r.mixture).max(), np.abs(r.sources).max(),
                   np.abs(r.noise).max()) <= PEAK_LIMIT
        scaled_down += spec.gains[0] < 1.0
    assert scaled_down > 0  # GRID clips reach full scale, so the peak rule must have acted


def test_single_source_enhancement_specs(grid):
    s1_dev, _, noises = grid
    specs = build_mixture_specs(s1_dev[:2], noises, 0.0, per_target=2, seed=3)
    assert [s.condition for s in specs] == ["1spk"] * 4
    assert all(s.sir_db is None and len(s.gains) == 2 for s in specs)
    assert len({s.id for s in specs}) == 4
    assert specs[0].noise != specs[1].noise  # per_target draws are independent
    r = render_mixture(specs[0])
    assert abs(_db(r.sources[0], r.noise)) < 1e-3
    assert len(r.mixture) == len(sf.read(str(s1_dev[0].audio))[0])


def test_cycled_noises_give_every_noise_its_share_and_keep_the_other_draws(grid):
    s1_dev, s4, noises = grid
    targets = s1_dev + s4
    cycled = build_mixture_specs(targets, noises[:3], 0.0, seed=3, cycle_noises=True)
    assert [s.noise.name for s in cycled] == [sorted(n for n, _ in noises[:3])[i % 3] for i in range(len(targets))]
    drawn = build_mixture_specs(targets, noises[:3], 0.0, seed=3)
    same = [a.noise.start == b.noise.start for a, b in zip(cycled, drawn) if a.noise.name == b.noise.name]
    assert same and all(same)                     # the excerpt draw is unchanged where the noise is


def test_manifest_round_trip_and_materialise(two_speaker_specs, tmp_path):
    path = write_mixture_manifest(two_speaker_specs, tmp_path / "lists" / "mix.csv")
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    for col in ("source1_id", "source2_audio", "source2_video", "gain2", "noise_start", "sir_db"):
        assert col in header
    back = read_mixture_manifest(path)
    assert back == two_speaker_specs  # gains survive with full precision
    with pytest.raises(InputError):
        write_mixture_manifest(two_speaker_specs, path)

    spec = back[0]
    folder = materialise([spec], tmp_path / "wav")[0]
    rendered = render_mixture(two_speaker_specs[0])
    for name, ref in [("mixture", rendered.mixture), ("noise", rendered.noise),
                      ("source1", rendered.sources[0]), ("source2", rendered.sources[1])]:
        data, rate = sf.read(str(folder / f"{name}.wav"), dtype="float32")
        assert rate == SR and np.array_equal(data, ref), name
    with pytest.raises(InputError, match="exists"):
        materialise([spec], tmp_path / "wav")


# --------------------------------------------------------------------------------------------
# synthetic signals (no shared data needed)
# --------------------------------------------------------------------------------------------
def _write(path: Path, x: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), SR, subtype="FLOAT")
    return path


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(8000) / SR
    clips = []
    for i, (spk, f0) in enumerate([("a", 150), ("a", 160), ("b", 220), ("c", 300)]):
        x = 0.5 * np.sin(2 * np.pi * f0 * t) * np.hanning(len(t))
        clips.append(Clip(f"{spk}_{i}", spk, _write(tmp_path / f"{spk}_{i}.wav", x)))
    short = _write(tmp_path / "short_noise.wav", rng.standard_normal(1000) * 0.05)
    long = _write(tmp_path / "long_noise.wav", rng.standard_normal(20000) * 0.05)
    return clips, [("short", short), ("long", long)], tmp_path


def test_interferers_exclude_target_speaker(synthetic):
    clips, noises, _ = synthetic
    specs = build_mixture_specs(clips, noises, [0.0], num_interferers=2, per_target=3, seed=1)
    for spec in specs:
        speakers = [s.speaker for s in spec.sources]
        assert len(set(speakers)) == 3  # target + 2 distinct other speakers
        assert spec.condition == "3spk"
    with pytest.raises(InputError, match="interfering speaker"):
        build_mixture_specs(clips, noises, [0.0], num_interferers=3)


def test_more_talkers_than_speakers_reuse_speakers_with_other_clips(synthetic):
    clips, noises, _ = synthetic
    two_speakers = [c for c in clips if c.speaker in ("a", "b")]         # a_0, a_1, b_2
    specs = build_mixture_specs(two_speakers, noises, [0.0], num_interferers=2, seed=3,
                                reuse_speakers=True)
    for spec in specs:
        ids = [s.id for s in spec.sources]
        assert len(set(ids)) == 3                                     # never one clip twice
        assert {s.speaker for s in spec.sources} == {"a", "b"}        # every other speaker first
    with pytest.raises(InputError, match="interfering speaker"):
        build_mixture_specs(two_speakers, noises, [0.0], num_interferers=2)
    with pytest.raises(InputError, match="fewer"):
        build_mixture_specs(two_speakers, noises, [0.0], num_interferers=3, reuse_speakers=True)


def test_short_noise_is_looped(synthetic):
    clips, noises, _ = synthetic
    specs = build_mixture_specs(clips[:1], noises[:1], [3.0], seed=0, per_target=4)
    for spec in specs:
        r = render_mixture(spec)
        assert 0 <= spec.noise.start < 1000
        assert np.array_equal(r.noise[:-1000], r.noise[1000:])  # period = noise length
        assert abs(_db(r.sources[0], r.noise) - 3.0) < 1e-3
    long = build_mixture_specs(clips[:1], noises[1:], [3.0], seed=0, per_target=20)
    assert all(0 <= s.noise.start <= 20000 - 8000 for s in long)  # fits without wrapping


def test_loud_inputs_are_scaled_not_clipped(synthetic):
    clips, noises, tmp = synthetic
    loud = Clip("loud", "z", _write(tmp / "loud.wav", np.sign(np.sin(np.arange(8000) / 7.0))))
    spec = build_mixture_specs([loud], noises, [-10.0], seed=2)[0]
    r = render_mixture(spec)
    assert np.abs(r.mixture).max() <= PEAK_LIMIT and spec.gains[0] < 0.5
    assert abs(_db(r.sources[0], r.noise) + 10.0) < 1e-3


def test_build_rejects_bad_input(synthetic):
    clips, noises, tmp = synthetic
    silent = Clip("quiet", "q", _write(tmp / "quiet.wav", np.zeros(4000)))
    with pytest.raises(InputError, match="silent"):
        build_mixture_specs([silent], noises, [0.0])
    with pytest.raises(InputError, match="more than once"):
        build_mixture_specs([clips[0], clips[0]], noises, [0.0])
    with pytest.raises(InputError, match="not found"):
        build_mixture_specs([Clip("x", "x", tmp / "missing.wav")], noises, [0.0])


def test_a_manifest_rewritten_is_replaced_whole_under_a_reader(two_speaker_specs, tmp_path):
    """A reader that opened the manifest before it is written again reads the old file to its end
    (the new one takes its place at once; written in place, the reader would see it truncated)."""
    path = write_mixture_manifest(two_speaker_specs, tmp_path / "mix.csv")
    old = path.read_bytes()
    with open(path, "rb") as reader:
        write_mixture_manifest(two_speaker_specs[:1], path, overwrite=True)
        assert reader.read() == old
    assert read_mixture_manifest(path) == two_speaker_specs[:1]
    assert [p.name for p in tmp_path.iterdir()] == ["mix.csv"]      # no part file left behind


def test_bad_manifest_rows_name_file_and_row(synthetic):
    clips, noises, tmp = synthetic
    specs = build_mixture_specs(clips[:3], noises, [0.0], num_interferers=1, seed=0)
    good = write_mixture_manifest(specs, tmp / "good.csv")
    lines = good.read_text().splitlines()
    header = lines[0].split(",")

    def corrupt(column: str, value: str, name: str) -> Path:
        cells = lines[2].split(",")
        cells[header.index(column)] = value
        path = tmp / name
        path.write_text("\n".join([lines[0], lines[1], ",".join(cells)] + lines[3:]) + "\n")
        return path

    cases = [("gain1", "loud", "not a number"), ("noise_gain", "-1", "positive"),
             ("num_samples", "2.5", "integer"), ("id", "", "id is empty"),
             ("sir_db", "", "sir_db is empty"), ("id", lines[1].split(",")[0], "duplicate")]
    for i, (column, value, problem) in enumerate(cases):
        path = corrupt(column, value, f"bad{i}.csv")
        with pytest.raises(InputError) as err:
            read_mixture_manifest(path)
        message = str(err.value)
        assert str(path) in message and "row 3" in message and problem in message
        assert "\n" not in message
    (tmp / "cols.csv").write_text("id,snr_db\nx,0\n")
    with pytest.raises(InputError, match="missing column"):
        read_mixture_manifest(tmp / "cols.csv")


def test_manifest_paths_are_relative_and_render_identically(synthetic):
    clips, noises, tmp = synthetic
    specs = build_mixture_specs(clips[1:3], noises, [0.0, 10.0], num_interferers=1, seed=4)
    path = write_mixture_manifest(specs, tmp / "sub" / "m.csv")
    assert str(tmp) not in path.read_text()  # portable: paths relative to the manifest
    assert read_mixture_manifest(path) == specs
    moved_root = tmp.with_name(tmp.name + "_moved")
    shutil.copytree(tmp, moved_root)  # move data and manifest together
    moved = read_mixture_manifest(moved_root / "sub" / "m.csv")
    assert all(str(moved_root) in str(s.target.audio) for s in moved)
    for a, b in zip(specs, moved):
        assert np.array_equal(render_mixture(a).mixture, render_mixture(b).mixture)
