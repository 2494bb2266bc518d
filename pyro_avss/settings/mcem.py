"""Settings of the MCEM reference (:mod:`pyro_avss.inference.mcem`): the ``mcem`` section of a
config (``evaluate --set mcem.em_iterations=20``); the defaults are the published ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SettingError
from .base import Rule, Section, at_least, key, within

#: the switch priors MCEM knows (``MCEMSettings.switch``): per frame, or one per utterance
MCEM_SWITCHES = ("iid", "utterance")


@dataclass
class MCEMSettings(Section, name="mcem"):
    """Settings of :func:`~pyro_avss.inference.mcem.mcem_separate`; defaults are the published
    ones (prior-art §2.1).

    :param noise_rank: NMF rank R.
    :param em_iterations: EM iteration cap.
    :param tol: stop when ``|cost_i - cost_{i-1}| / |cost_{i-1}| < tol``.
    :param mh_steps: MH steps per E-step; ``burn_in`` of them are discarded.
    :param proposal_var: variance of the random-walk proposal.
    :param final_steps: MH steps of the final run; ``final_burn_in`` of them are discarded.
    :param seed: seeds the NMF initialisation and the MH chains.
    :param switch: ``"iid"`` (a component per frame, summed out frame by frame: the published
        algorithm) or ``"utterance"`` (one component for the whole utterance, Gibbs-sampled with
        the latent codes; the switch prior of our SVI's default). See the module docstring of
        :mod:`pyro_avss.inference.mcem`.
    :param components: restrict the switch to these component indices (None = all K); set by
        code, not a config key.
    """

    noise_rank: int = key(8, at_least(1))
    em_iterations: int = key(100, at_least(1))
    tol: float = key(1e-5, Rule(">= 0", lambda x: 0 <= x < math.inf))
    mh_steps: int = key(40, at_least(1))
    burn_in: int = 30
    proposal_var: float = key(0.01, Rule("> 0", lambda x: 0 < x < math.inf))
    final_steps: int = key(100, at_least(1))
    final_burn_in: int = 75
    seed: int = key(0, within(0, 2**32 - 1, shown="2**32 - 1"))
    switch: str = key("iid", choices=MCEM_SWITCHES)
    components: tuple[int, ...] | None = key(None, config=False)

    def check(self) -> None:
        """The burn-ins: fewer than their runs' steps."""
        if not 0 <= self.burn_in < self.mh_steps:
            raise SettingError("mcem.burn_in", f"must be in [0, mh_steps={self.mh_steps}), got {self.burn_in}")
        if not 0 <= self.final_burn_in < self.final_steps:
            raise SettingError("mcem.final_burn_in", f"must be in [0, final_steps={self.final_steps}), "
                                                     f"got {self.final_burn_in}")
