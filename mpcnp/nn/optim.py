"""Optimizers for private parameters: SGD (momentum, weight decay) and Adam, PyTorch's interface.

``opt = SGD(model.parameters(), lr=0.1)``; after ``loss.backward()``, ``opt.step()`` updates every
parameter in place (inside ``mp.no_grad()``: every reference to it, the model's included, sees the
new value) and ``opt.zero_grad()`` clears the gradients. Parameters must be private tensors; the
optimizer sets their ``requires_grad``. Optimizer state (momentum, Adam's moments) is private too:
nothing is revealed.

Public reals (the learning rate, momentum, betas, weight decay) multiply shares locally: each is
rounded to frac_bits significant bits and the product truncated (``x * c`` for a public c), which
rounds stochastically (the truncation of additive shares is off by one unit with probability equal
to the dropped fraction), so updates smaller than a unit 2^-frac_bits still move a parameter by the
right amount on average. Train at frac_bits 16 to 20 with exact truncation: at 16 a unit is 1.5e-5,
at 20 9.5e-7.
"""
from __future__ import annotations

import math

import mpcnp as mp

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """What every optimizer shares: the parameters, ``zero_grad`` and ``step``."""

    def __init__(self, params) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters")
        for i, p in enumerate(self.params):
            if not isinstance(p, mp.PrivateTensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a private tensor: share the "
                                "model first (model.private(owner)) and pass its parameters()")
            p.requires_grad = True
        self.steps = 0

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (the next backward() starts from zero)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place; nothing is recorded for gradients."""
        self.steps += 1
        with mp.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is not None:
                    self._update(i, p, p.grad)

    def _update(self, i: int, p, grad) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent: g = grad + weight_decay p; with momentum the buffer
    b = momentum b + g (b = g at the first step) replaces g; then p -= lr g (PyTorch's SGD).
    Cost per parameter element: one local product with lr (a truncation), one more for each of
    momentum and weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params)
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SGD: {name} must be a finite number >= 0, got {value!r}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.buffers: list = [None] * len(self.params)

    def _update(self, i, p, grad) -> None:
        if self.weight_decay:
            grad = grad + p * self.weight_decay
        if self.momentum:
            self.buffers[i] = grad if self.buffers[i] is None else self.buffers[i] * self.momentum + grad
            grad = self.buffers[i]
        p -= grad * self.lr


class Adam(Optimizer):
    """Adam (Kingma and Ba, ICLR 2015): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, then
    p -= lr m^ / sqrt(v^ + eps^2) with the bias corrections m^ = m / (1 - b1^t), v^ = v / (1 - b2^t).
    eps sits inside the square root (as Optax's eps_root), which keeps the inverse square root's
    input at least eps^2.

    Fixed point. Adam is invariant to the scale of the gradients except through eps, so the gradients
    are first multiplied by S = 2^ceil(log2(1 / eps)) (exact: an integral factor) and eps by S too:
    the squares S^2 g^2 keep their precision however small g is, and the inverse square root's input
    x = S^2 v^ + (S eps)^2 is at least 1. ``mp.inverse_sqrt_times`` computes m^ S x^(-1/2) (see there
    for its range, error and cost: under securenn exact range reduction, any x). The moments need |S g| below 2^((62 - frac_bits) / 2) (2^23 at
    frac_bits 16: |g| < 64 for eps = 1e-5); under pond also |g| <= ``grad_bound`` with
    (grad_bound / eps)^2 below 2^(60 - 2 frac_bits) (pond's inverse square root refuses larger).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-5, grad_bound: float = 1.0) -> None:
        super().__init__(params)
        b1, b2 = betas
        if not (0 < lr and 0 <= b1 < 1 and 0 <= b2 < 1 and 0 < eps < 1 and grad_bound > 0):
            raise ValueError(f"Adam: need lr > 0, betas in [0, 1), 0 < eps < 1, grad_bound > 0; got lr={lr}, "
                             f"betas={betas}, eps={eps}, grad_bound={grad_bound}")
        self.lr, self.betas, self.eps, self.grad_bound = float(lr), (float(b1), float(b2)), float(eps), grad_bound
        self.scale = 2 ** math.ceil(math.log2(1 / eps))
        self.moments: list = [None] * len(self.params)

    def step(self) -> None:
        """One Adam step for every parameter with a gradient, all of them batched into one inverse
        square root (its rounds are shared)."""
        self.steps += 1
        b1, b2 = self.betas
        with mp.no_grad():
            live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
            numerators, radicands = [], []
            for i, p in live:
                g = p.grad * self.scale
                if self.moments[i] is None:
                    m, v = g * (1 - b1), (g * g) * (1 - b2)
                else:
                    m, v = self.moments[i]
                    m, v = m * b1 + g * (1 - b1), v * b2 + (g * g) * (1 - b2)
                self.moments[i] = (m, v)
                numerators.append((m * (1 / (1 - b1 ** self.steps))).flatten())
                radicands.append((v * (1 / (1 - b2 ** self.steps)) + (self.scale * self.eps) ** 2).flatten())
            if not live:
                return
            bound = (self.scale * self.grad_bound) ** 2 + (self.scale * self.eps) ** 2
            steps = mp.inverse_sqrt_times(mp.concat(radicands), mp.concat(numerators), bound)
            start = 0
            for i, p in live:
                p -= steps[start:start + p.size].reshape(p.shape) * self.lr
                start += p.size

    def _update(self, i, p, grad) -> None:   # step() batches every parameter instead
        raise AssertionError("Adam.step updates all parameters at once")
