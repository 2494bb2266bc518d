"""Corpora readers, manifests, mixtures and the synthetic demo corpus."""

from .clips import Clip

__all__ = ["Clip"]
