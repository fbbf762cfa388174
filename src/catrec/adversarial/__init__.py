"""CAT's adversarial machinery (Tan et al., SDM 2024): cascade scores and perturbations."""

from catrec.adversarial.cascade import CascadeWeights, cascade_effect, cascade_weights
from catrec.adversarial.perturb import interaction_perturbation, item_perturbation

__all__ = [
    "CascadeWeights",
    "cascade_effect",
    "cascade_weights",
    "interaction_perturbation",
    "item_perturbation",
]
