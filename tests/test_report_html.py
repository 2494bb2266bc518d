"""The listening report (report.html) of ``evaluate`` and ``separate``, like-for-like tables and
the labels of the figures (read from the matplotlib Figure objects, not from pixels)."""

from __future__ import annotations

import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pyro_avss.evaluation.harness import evaluate
from pyro_avss.evaluation.listening_report import example_ids
from pyro_avss.evaluation.report import plot_metrics_vs_snr, results_markdown
from pyro_avss.evaluation.results_csv import read_results
from pyro_avss.evaluation.summary import compare
from pyro_avss.plots import learning_curve, posterior_figure, saved_epoch, spectrogram_figure, time_width

from test_harness import FAST, setup  # noqa: F401 - the tiny synthetic manifest and model

SYSTEMS = "mixture,spectral-gating,switching"


class _Refs(HTMLParser):
    """Every src/href of a page, audio sources and the sections' data attributes."""

    def __init__(self):
        super().__init__()
        self.refs, self.audio, self.items, self.scripts = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key])
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "section" and "item" in (a.get("class") or ""):
            self.items.append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])


def parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def run(setup):  # noqa: F811
    """Evaluate three systems, spectral gating failing on one one-talker mixture."""
    import pyro_avss.evaluation.baselines as baselines

    root, specs = setup
    victim = specs[1].id
    real = baselines.spectral_gating
    calls = []

    def flaky(mixture, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:                      # the second one-talker mixture it sees
            raise RuntimeError("gating exploded")
        return real(mixture, *args, **kwargs)

    baselines.spectral_gating = flaky
    try:
        out = root / "report_out"
        summary = evaluate(root / "mix.csv", root / "model.pt", out, SYSTEMS, overrides=FAST,
                           progress=False, examples="all")
    finally:
        baselines.spectral_gating = real
    return root, specs, out, summary, read_results(out / "results.csv"), victim


def test_report_links_only_local_files_that_exist(run):
    _, specs, out, _, _, _ = run
    page = out / "report.html"
    refs = parse(page)
    assert refs.refs and not refs.scripts
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "http://" not in text and "https://" not in text
    for ref in refs.refs:
        assert (out / ref).is_file(), ref
    # every kept mixture has a section with its filter values
    assert sorted(i["talkers"] for i in refs.items) == sorted(str(s.num_sources) for s in specs)
    assert {i["snr"] for i in refs.items} == {f"{s.snr_db:g} dB" for s in specs}
    for wav in refs.audio:
        info = sf.info(str(out / wav))
        assert info.subtype == "PCM_16" and info.samplerate == 16000


def test_one_player_per_mixture_and_signal(run):
    _, specs, out, _, rows, _ = run
    audio = parse(out / "report.html").audio
    assert len(audio) == len(set(audio))
    ok = {(r["id"], r["system"]) for r in rows if r["status"] == "ok"}
    expected = set()
    for s in specs:
        expected.add(f"examples/{s.id}/mixture.wav")
        for j in range(s.num_sources):
            expected.add(f"examples/{s.id}/clean_source{j + 1}.wav")
            for name in ("spectral-gating", "switching"):       # the mixture system: the mixture
                if (s.id, name) in ok:
                    expected.add(f"examples/{s.id}/{name}_source{j + 1}.wav")
    assert set(audio) == expected
    for s in specs:                                             # figures of every mixture
        assert (out / "examples" / f"{s.id}.png").is_file()
        assert (out / "examples" / s.id / "switching_posterior.png").is_file()


def test_only_examples_per_condition_are_kept(setup, tmp_path):  # noqa: F811
    root, specs = setup
    assert example_ids(specs, 1) == [specs[0].id, specs[1].id, specs[3].id]  # 0 dB, 5 dB, J=2
    assert example_ids(specs, "all") == [s.id for s in specs] and example_ids(specs, 0) == []
    evaluate(root / "mix.csv", None, tmp_path, "mixture", progress=False, examples=0)
    assert not parse(tmp_path / "report.html").audio and not (tmp_path / "examples").exists()


def test_means_compare_like_with_like(run):
    _, specs, out, summary, rows, victim = run
    groups = summary["like_for_like"]["groups"]
    assert set(groups) == {"1", "2"}                            # talkers never pooled
    one, two = groups["1"], groups["2"]
    assert one["mixtures"] == 3 and one["common"] == 2
    assert one["restricted_by"] == {"spectral-gating": 1}
    common = [r for r in rows if r["id"] != victim and r["id"] in {s.id for s in specs if s.num_sources == 1}]
    for name in ("mixture", "switching"):
        mine = [r["si_sdri"] for r in common if r["system"] == name]
        assert len(mine) == 2
        assert one["all"]["mean"][name]["si_sdri"] == pytest.approx(np.mean(mine))
    assert two["systems"] == ["mixture", "switching"] and "spectral-gating" in two["left_out"]
    md = (out / "results.md").read_text()
    assert "2 of 3 mixtures that every listed system processed" in md
    assert "excludes mixtures missing from: spectral-gating (1)" in md
    assert "## One talker" in md and "## 2 talkers" in md
    html = (out / "report.html").read_text()
    assert "2 of 3 mixtures that every listed system processed" in html
    assert json.loads((out / "summary.json").read_text())["like_for_like"]["groups"]["1"]["common"] == 2


def test_compare_restricts_to_common_mixtures_and_joint_finite_metrics():
    def row(i, system, si_sdri, status="ok", snr=0.0, source=1, pesq=2.0):
        return {"id": i, "system": system, "status": status, "source": source, "snr_db": snr,
                "noise": "white", "si_sdri": si_sdri, "si_sdr": si_sdri, "sdr": si_sdri,
                "pesq_wb": pesq, "pesq_nb": pesq, "stoi": 0.5, "estoi": 0.5, "rtf": 0.1,
                "switch_true_mass": math.nan, "swapped": math.nan, "error": ""}

    rows = [row("a", "x", 1.0), row("a", "y", 2.0), row("b", "x", 3.0),
            row("b", "y", math.nan, status="failed"), row("c", "x", 5.0, pesq=math.nan),
            row("c", "y", 6.0)]
    g = compare(rows)["groups"]["1"]
    assert g["common"] == 2 and g["restricted_by"] == {"y": 1}
    assert g["all"]["mean"]["x"]["si_sdri"] == pytest.approx(3.0)     # a and c, not b
    assert g["all"]["mean"]["y"]["si_sdri"] == pytest.approx(4.0)
    assert g["all"]["valid"]["pesq_wb"] == 1                          # c lacks x's PESQ
    assert g["all"]["mean"]["y"]["pesq_wb"] == pytest.approx(2.0)
    md = results_markdown({"systems": {}}, {}, compare(rows))
    assert "| x | 3.00 |" in md


def test_metrics_vs_snr_figure_labels(run, tmp_path):
    _, _, _, _, rows, _ = run
    fig = plot_metrics_vs_snr(rows, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
    axes = [ax for ax in fig.axes if ax.get_visible()]
    ylabels = [ax.get_ylabel() for ax in axes]
    assert ylabels[:3] == ["SI-SDRi (dB)", "PESQ-WB (MOS-LQO)", "STOI"]
    assert all(ax.get_xlabel() == "input SNR (dB)" for ax in axes)
    assert any("2 talkers" in ax.get_title() for ax in axes)          # own row for J = 2
    lines = axes[0].get_lines()
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == len(lines) == 3
    (legend,) = fig.legends
    fig.canvas.draw()
    right = max(ax.get_position().x1 for ax in axes)
    box = legend.get_window_extent().transformed(fig.transFigure.inverted())
    assert box.x0 > right                                             # outside the axes
    assert [t.get_text() for t in legend.get_texts()] == ["mixture", "spectral-gating", "switching"]


def test_learning_curve_marks_saved_epoch_and_warmup(tmp_path):
    log = [{"epoch": e, "beta": min(1.0, 0.2 * e), "train_loss": 10.0 - e,
            "dev_loss": [9, 8, 7, 6, 5, 4.5, 4.8, 5.0][e - 1]} for e in range(1, 9)]
    assert saved_epoch(log) == 6
    fig = learning_curve(log, tmp_path / "lc.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "negative ELBO per frame (nats)"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "saved model (epoch 6)" in texts and "KL warm-up (β < 1)" in texts
    assert "saved model (epoch 7)" in [t.get_text() for t in learning_curve(
        log, tmp_path / "lc2.png", saved=7).axes[0].get_legend().get_texts()]


def test_spectrograms_and_posteriors_follow_the_length(tmp_path):
    rng = np.random.default_rng(0)
    powers = [("mixture", rng.random((300, 129))), ("estimate", rng.random((300, 129)) * 0.1)]
    fig = spectrogram_figure(tmp_path / "s.png", powers, 100.0, 16000)
    assert "power (dB)" in [ax.get_ylabel() for ax in fig.axes]       # the colour bar
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len({im.get_clim() for im in images}) == 1                # one scale for all
    assert fig.axes[1].get_xlabel() == "time (s)"

    names = ["universal", "a", "b"]
    short = np.zeros((300, 2, 3))
    short[:, :, 1] = 1.0
    fig = posterior_figure(tmp_path / "p.png", short, names, 100.0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["a"]                                          # components with mass only
    assert fig.get_size_inches()[0] == pytest.approx(time_width(3.0) + 1.2)
    long = np.full((100 * 600, 1, 3), 1 / 3)                        # ten minutes
    fig = posterior_figure(tmp_path / "l.png", long, names, 100.0)
    width = fig.get_size_inches()[0]
    assert width == pytest.approx(time_width(600.0) + 1.2) and width < 18   # capped
    assert "mean over" in fig._suptitle.get_text()
    ticks = fig.axes[0].xaxis.get_major_locator().tick_values(0, 600)
    assert 5 <= len(ticks) <= 25                                    # about one per inch


def test_separate_writes_a_report_of_its_inputs(tmp_path):
    from pyro_avss.inference.run_separate import SeparationJob, run_jobs
    from pyro_avss.inference.separation import SeparationSettings

    from test_separation import noisy, random_models

    jobs = []
    for i, J in enumerate((1, 2)):
        sf.write(tmp_path / f"clip{i}.wav", noisy(0.5, i), 16000)
        jobs.append(SeparationJob(tmp_path / f"clip{i}.wav", [None] * J, f"clip{i}"))
    out = tmp_path / "out"
    outcome = run_jobs(random_models(), jobs, out, SeparationSettings(steps=2, num_samples=1),
                       device="cpu", resample=False, force=False, detector="roi", progress=False,
                       echo=lambda _: None, report=True)
    assert sorted(outcome.done) == ["clip0", "clip1"]
    refs = parse(out / "report.html")
    assert all((out / r).is_file() for r in refs.refs) and "http" not in (out / "report.html").read_text()
    assert sorted(refs.audio) == sorted(["../clip0.wav", "clip0/source1.wav", "clip0/noise.wav",
                                         "../clip1.wav", "clip1/source1.wav", "clip1/source2.wav",
                                         "clip1/noise.wav"])
    assert {"clip0/separation.png", "clip1/separation.png"} <= set(refs.refs)
    assert [i["sources"] for i in refs.items] == ["1", "2"]
    quiet = run_jobs(random_models(), jobs[:1], tmp_path / "quiet", SeparationSettings(steps=2, num_samples=1),
                     device="cpu", resample=False, force=False, detector="roi", progress=False,
                     echo=lambda _: None)
    assert quiet.done == ["clip0"] and not (tmp_path / "quiet" / "report.html").exists()   # opt-in


# ---------------------------------------------------------------------------------------------
# the report in a real browser (headless Chromium over the DevTools protocol, no network)
# ---------------------------------------------------------------------------------------------
from chromium_page import Chromium, audio_check, find_chromium  # noqa: E402

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium is not on PATH (Debian/Ubuntu: apt-get install chromium; .ci/run tries to); "
           "the report's browser check needs it")


@needs_chromium
def test_report_plays_in_headless_chromium(run, tmp_path):
    """The evaluation's report.html opened from file:// in Chromium: every audio element loads
    (metadata read, duration > 0, no error), the page logs no console error or exception, and
    the filters' script ran. A copy pointing at a missing WAV shows the check catches it."""
    _, specs, out, _, _, _ = run
    page_path = out / "report.html"
    audio = parse(page_path).audio
    broken = out / "broken_report.html"                         # next to the real one: same links
    broken.write_text(page_path.read_text().replace(audio[0], "examples/missing.wav", 1))
    try:
        with Chromium() as browser:
            page = browser.open_page()
            page.navigate(page_path.resolve().as_uri())
            loaded = audio_check(page, timeout_s=20)
            errors = page.errors()
            count = page.evaluate("document.getElementById('count').textContent")
            shot = page.screenshot(tmp_path / "report.png", 1300, 1600)
            page.navigate(broken.resolve().as_uri())
            loaded_broken = audio_check(page, timeout_s=20)
            for _ in range(20):                                 # the failed load is logged too
                if any("missing.wav" in e for e in page.errors()):
                    break
                time.sleep(0.1)
                page.evaluate("1")
            errors_broken = page.errors()
            page.close()
    finally:
        broken.unlink()
    assert sorted(a["src"] for a in loaded) == sorted(audio) and len(audio) > 0
    bad = [a for a in loaded if a["error"] or not (a["duration"] or 0) > 0]
    assert not bad, bad
    for a in loaded:                                            # the WAV's own length
        assert a["duration"] == pytest.approx(sf.info(str(out / a["src"])).duration, abs=0.01)
    assert errors == []
    assert count == f"{len(specs)} of {len(specs)} shown"       # the inline script ran
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    missing = [a for a in loaded_broken if a["src"] == "examples/missing.wav"]
    assert len(missing) == 1 and missing[0]["error"] and missing[0]["error"] != "timeout"
    assert any("missing.wav" in e for e in errors_broken), errors_broken
