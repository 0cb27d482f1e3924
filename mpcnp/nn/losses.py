"""Loss functions as objects, PyTorch's way: ``loss_fn(output, target)`` is a private scalar whose
``backward()`` applies the loss's closed-form gradient (the functional forms are in ``mp.losses``,
with their accuracy and cost)."""
from __future__ import annotations

import mpcnp as mp

__all__ = ["Loss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss"]


class Loss:
    """A loss with its ``reduction`` ("mean", "sum" or "none") and the kind of target it scores, which
    ``evaluate`` uses to count correct predictions ("classes", "binary" or None)."""

    task: str | None = None

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in mp.losses.REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(mp.losses.REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, output, target):
        return self.compute(output, target, reduction=self.reduction)

    @staticmethod
    def compute(output, target, reduction: str):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    """Cross-entropy of softmax(logits) (N, classes) against integer labels (N,) or one-hot rows
    (``mp.losses.cross_entropy``); gradient softmax - onehot, with the exact max shift under securenn."""

    task = "classes"
    compute = staticmethod(mp.losses.cross_entropy)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy of sigmoid(logits) against 0/1 targets of the logits' shape
    (``mp.losses.binary_cross_entropy_with_logits``); gradient sigmoid - target."""

    task = "binary"
    compute = staticmethod(mp.losses.binary_cross_entropy_with_logits)


class MSELoss(Loss):
    """Mean squared error (``mp.losses.mse_loss``); gradient 2 (output - target) / count."""

    compute = staticmethod(mp.losses.mse_loss)
