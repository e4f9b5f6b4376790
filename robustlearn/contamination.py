r"""Recursive contamination: learning when part of each round's data comes from the previous model.

The setting of Amin, Bie, Kong, Syed & Vassilvitskii, "Learning from Synthetic Data:
Limitations of ERM" (arXiv:2601.15468, ALT 2026): in every round a fraction :math:`\alpha` of the
data is produced by the model deployed after the previous round, and the learner cannot tell
which. What is the paper's and what is ours (docs/contamination.md says the same):

* the paper's: the mean model and Theorem 1 (:func:`uniform_variance`, and
  :func:`contamination_covariance` for any round sizes), the PAC protocol
  (:func:`simulate_rounds`), and the claims that repeated ERM can stall while algorithms
  that learn every VC class under any :math:`\alpha < 1` exist;
* derived here (and tested by simulation): the best linear unbiased variance
  (:func:`blue_variance`, :func:`generation_weights`), the estimators of :math:`\alpha`
  (:func:`estimate_alpha`) and the corrected risk
  (:func:`robustlearn.objectives.contamination_corrected`);
* our reconstruction, not the paper's pseudocode (not available to us): the learners
  :func:`pooled_learner` with the corrected objective and :func:`disagreement_learner` (the
  positive-unlabeled route).
"""

from robustlearn._src.contamination.alpha import AlphaEstimate, estimate_alpha
from robustlearn._src.contamination.means import (
    MeansSimulation,
    blue_variance,
    contamination_covariance,
    generation_weights,
    simulate_means,
    uniform_variance,
)
from robustlearn._src.contamination.rounds import (
    DisagreementModel,
    Rounds,
    Simulation,
    disagreement_learner,
    pooled_learner,
    region_features,
    simulate_rounds,
)

__all__ = [
    "AlphaEstimate",
    "DisagreementModel",
    "MeansSimulation",
    "Rounds",
    "Simulation",
    "blue_variance",
    "contamination_covariance",
    "disagreement_learner",
    "estimate_alpha",
    "generation_weights",
    "pooled_learner",
    "region_features",
    "simulate_means",
    "simulate_rounds",
    "uniform_variance",
]
