"""Corpora readers, prepared manifests, mixtures, lip corruption and babble noise."""

from .clips import Clip

__all__ = ["Clip"]
