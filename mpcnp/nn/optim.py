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
    eps sits inside the square root (as Optax's eps_root does), which keeps the inverse square root's
    input positive. The betas are rounded to multiples of 2^-16 (0.999 becomes 0.99899), each moment
    update being one truncation; the bias corrections use the rounded values.

    Fixed point. Adam is invariant to the scale of the gradients (eps scaled along), so the moments
    are kept for S g with S = 2^s the largest power of two with S grad_bound <= 2^((60 - 2f) / 2)
    (f = frac_bits; 2^11 at 16 for the default grad_bound 8): gradients down to 2^-(f/2) / S (2e-6)
    keep their squares, and S g squared stays inside a product's headroom. The bias correction of v
    moves to eps and to the numerator: m^ / sqrt(v^ + eps^2) = (sqrt(c2) / c1) m / sqrt(v + c2 eps^2),
    c_i = 1 - b_i^t, so no factor near 1000 multiplies v; eps^2 S^2 c2 below one unit 2^-f is raised
    to one unit. ``mp.inverse_sqrt_times`` computes the quotient (securenn: any value from a unit up;
    pond: the interval from (S eps)^2 (1 - b2) to (S grad_bound)^2, its steps growing with the ratio).
    Precondition (not checked: the gradients are secret): |g| <= ``grad_bound``; beyond it the
    squares overflow the ring and the step is garbage.
    Cost per parameter element and step under securenn at frac_bits 16: 3 comparisons (bounded and
    blurred: the inverse square root's input lies in its domain when |g| <= grad_bound, and its
    thresholds tolerate a blur) and about 20 products and truncations: 667 bytes and 29 rounds in all
    (752 and 33 at rel_error 1e-6), however many parameters: all of them are batched into one flat
    vector for the moments and one call of the inverse square root (one set of rounds).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, grad_bound: float = 8.0, rel_error: float = 1e-3) -> None:
        super().__init__(params)
        b1, b2 = betas
        if not (0 < lr and 0 <= b1 < 1 and 0 <= b2 < 1 and 0 < eps and 0 < grad_bound and 0 < rel_error < 1):
            raise ValueError(f"Adam: need lr > 0, betas in [0, 1), eps > 0, grad_bound > 0, rel_error in (0, 1); "
                             f"got lr={lr}, betas={betas}, eps={eps}, grad_bound={grad_bound}, rel_error={rel_error}")
        self.lr, self.betas, self.eps, self.grad_bound = float(lr), (float(b1), float(b2)), float(eps), grad_bound
        self.rel_error = float(rel_error)
        self.moments: list = [None] * len(self.params)
        self._flat = None    # (indices of the parameters, m, v) of the last step: its flat vectors

    def _scale(self, frac_bits: int) -> float:
        return 2.0 ** math.floor((60 - 2 * frac_bits) / 2 - math.log2(self.grad_bound))

    def step(self) -> None:
        """One Adam step for every parameter with a gradient, all of them batched into one inverse
        square root (its rounds are shared)."""
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.steps += 1
        b1, b2 = (round(b * 2 ** _MIX_BITS) / 2 ** _MIX_BITS for b in self.betas)   # as _mix_sum applies them
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        frac_bits = live[0][1].frac_bits
        unit, scale = 2.0 ** -frac_bits, self._scale(frac_bits)
        floor = max((scale * self.eps) ** 2 * c2, unit)
        with mp.no_grad():
            # every parameter in one flat vector: each product and truncation below is one round for
            # all of them, not one per parameter
            g = mp.concat([p.grad.flatten() for _, p in live]) * scale
            square = g * g
            parts, start = [], 0                     # each live parameter's slice of the flat vector
            for i, p in live:
                parts.append((i, p, slice(start, start + p.size)))
                start += p.size
            key = tuple(i for i, _ in live)
            if self._flat is not None and self._flat[0] == key:   # the last step's vectors, as they are
                m, v = self._flat[1:]
            else:
                zeros = g * 0.0                      # a parameter's moments at its first step
                m, v = (mp.concat([self.moments[i][k] if self.moments[i] else zeros[part] for i, _, part in parts])
                        for k in (0, 1))
            # both moments by _mix_sum's rule, truncated together
            mixed = mp.concat([_mix_sum(m, g, b1), _mix_sum(v, square, b2)]) * 2.0 ** -_MIX_BITS
            m, v = mixed[:g.size], mixed[g.size:]
            self._flat = (key, m, v)
            for i, _, part in parts:
                self.moments[i] = (m[part], v[part])
            lo = max((scale * self.eps) ** 2 * (1 - b2), unit)
            hi = (scale * self.grad_bound) ** 2 + floor
            steps = mp.inverse_sqrt_times(v + floor, m * (self.lr * math.sqrt(c2) / c1), interval=(lo, hi),
                                          rel_error=self.rel_error)
            for _, p, part in parts:
                p -= steps[part].reshape(p.shape)

    def _update(self, i, p, grad) -> None:   # step() batches every parameter instead
        raise AssertionError("Adam.step updates all parameters at once")


_MIX_BITS = 16


def _mix_sum(old, new, beta: float):
    """2^16 (beta old + (1 - beta) new), exactly: both factors as integers over 2^16 (beta rounded to
    a multiple of 2^-16, which ``step``'s bias corrections use too); ``step`` then scales the sum by
    2^-16 (a shift: no product, so no headroom lost), one truncation."""
    keep = round(beta * 2 ** _MIX_BITS)
    return old * float(keep) + new * float(2 ** _MIX_BITS - keep)
