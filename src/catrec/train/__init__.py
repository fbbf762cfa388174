"""Training: objectives (standard / adversarial / cascade-guided) and the one training loop."""

from catrec.train.objectives import Batch, Objective, rec_loss

__all__ = ["Batch", "Objective", "rec_loss"]
