"""Prepared corpora for training: prepare once, reuse from the cache afterwards."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

LOG = logging.getLogger(__name__)


def cache_folder(corpus: str | Path, cache_root: str | Path) -> Path:
    """``<cache_root>/<corpus name>-<hash of its absolute path>``."""
    corpus = Path(corpus).resolve()
    digest = hashlib.sha1(str(corpus).encode()).hexdigest()[:8]
    return Path(cache_root) / f"{corpus.stem}-{digest}"


def prepared_rows(corpora: list, cache_root: str | Path, detector: str = "auto",
                  progress: bool = True) -> list[dict]:
    """Rows of the prepared manifests of ``corpora`` (prepared into the cache when needed;
    already cached clips are skipped by ``prepare_corpus``)."""
    from ..errors import InputError
    from .corpora import scan_corpus
    from .prepare import prepare_corpus, read_prepared_manifest

    if not corpora:
        raise InputError("data.corpora", "no corpus given (set data.corpora in the config)")
    rows: list[dict] = []
    for corpus in corpora:
        folder = cache_folder(corpus, cache_root)
        manifest = folder / "manifest.csv"
        if not manifest.exists():
            clips, problems = scan_corpus(corpus)
            for problem in problems:
                LOG.warning(f"notice: {corpus}: {problem}")
            prepare_corpus(clips, folder, detector=detector, progress=progress)
        rows.extend(read_prepared_manifest(manifest))
        left_out = _count_rows(folder / "failures.csv")
        if left_out:
            LOG.warning(f"notice: {corpus}: {left_out} clip(s) could not be prepared and are left out "
                        f"(reasons in {folder / 'failures.csv'})")
    return rows


def _count_rows(path: Path) -> int:
    """Data rows of a CSV file (0 when it does not exist)."""
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
