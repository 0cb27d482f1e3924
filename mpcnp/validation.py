"""Validation mode, ``mp.run(..., validate=True)``: every private operation checked against float64.

FOR DEVELOPMENT ON TEST DATA ONLY: this mode reveals every private value to every party.

An observer on the operation funnel (mpcnp.tracing) keeps a public float64 shadow of every private
tensor: the revealed value of the tensor itself. After each outermost private operation it reveals
the result, replays the same call on the shadows of its operands (public tensors: NumPy's exact
float64 answer), and checks

- the operation's documented preconditions on the shadows of its inputs: an approximation's input
  interval (Pond's polynomials, the reciprocal, the roots, the logarithm), the bound promised to
  SecureNN's bounded comparisons (``mp.relu``, ``mp.maxpool2d`` and the others' ``bound``), the product headroom
  |x y| < 2^(62 - 2f) of a product, the range of a private division, a 0/1 condition;
- the result against the replay, with a tolerance that follows from frac_bits and the operation's
  documented error (a unit per truncation, the approximation's stated bound, ...).

The first operation that fails raises ``ValidationError`` on every party, naming the operation, the
line of user code that called it, the worst element (its index, the private and the float64 value)
and the reason: an input outside an approximation's interval or beyond a promised bound, a product beyond the ring's
headroom, a local truncation failure, or a result off by more than the documentation allows (a bug
to report). CrypTen's and SPU's debug modes compare the same way; this one also says why.

Each check reveals the result (one round), so a validated run is slower and shows everything: it is
meant for finding where a program leaves the documented ranges on test data, before a real run.
"""
from __future__ import annotations

import functools
import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mpcnp import fixedpoint, functions
from mpcnp.approx import EXP_HI, EXP_LO, LOG_INTERVAL, RECIPROCAL_INTERVAL, ROOT_INTERVAL, STEP_BAND, STEP_BOUND
from mpcnp.functions import pool_windows
from mpcnp.protocols import families, sharing
from mpcnp.protocols.polynomial import RELU_BOUND
from mpcnp.runtime.context import Context
from mpcnp.tensor import PrivateTensor, PublicTensor
from mpcnp.tracing import Event, Observer, before_reveal

__all__ = ["ValidationError", "ValidationWarning", "Validator", "BANNER"]

BANNER = ("mpcnp validation mode (validate=True) REVEALS EVERY PRIVATE VALUE TO EVERY PARTY: it is for "
          "development on test data only; never run it on real data")


class ValidationError(ArithmeticError):
    """A private operation left its documented range or its result differs from float64."""


class ValidationWarning(UserWarning):
    """Issued by mp.run(validate=True): the run reveals everything."""


@dataclass
class Problem:
    """A violated precondition: where (a boolean mask over ``values``) and what."""

    mask: np.ndarray
    values: np.ndarray
    reason: str


class Validator(Observer):
    """The validation observer of one party (module docstring)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.family = families.of(ctx)
        self._shadows: dict[int, tuple[weakref.ref, np.ndarray]] = {}

    # ---- shadows ---------------------------------------------------------------------------------
    def _open(self, tensor: PrivateTensor) -> np.ndarray:
        """The tensor's value, revealed to every party (after the observers' before_reveal: the
        program digest compares first)."""
        before_reveal(tensor, self.ctx.parties)
        ring = sharing.reveal(self.ctx, tensor.share, tensor.shape, None)
        return fixedpoint.decode(ring, self.ctx.config.frac_bits)

    def _remember(self, tensor: PrivateTensor, value: np.ndarray) -> None:
        key = id(tensor)
        self._shadows[key] = (weakref.ref(tensor, lambda _, key=key: self._shadows.pop(key, None)), value)

    def shadow(self, tensor: PrivateTensor) -> np.ndarray:
        """The float64 value of a private tensor; one made outside the funnel is revealed now."""
        entry = self._shadows.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        value = self._open(tensor)
        self._remember(tensor, value)
        return value

    def _public(self, value):
        if isinstance(value, PrivateTensor):
            return PublicTensor(self.shadow(value))
        if isinstance(value, (list, tuple)) and any(isinstance(v, PrivateTensor) for v in value):
            return type(value)(self._public(v) for v in value)
        return value

    # ---- the check ---------------------------------------------------------------------------------
    def on_operation(self, event: Event) -> None:
        if not isinstance(event.result, PrivateTensor):
            return
        actual = self._open(event.result)
        if event.op != "private":
            args = tuple(self._public(a) for a in event.args)
            kwargs = {k: self._public(v) for k, v in event.kwargs.items()}
            self._check(event, args, kwargs, actual)
        self._remember(event.result, actual)

    def _check(self, event: Event, args: tuple, kwargs: dict, actual: np.ndarray) -> None:
        f = self.ctx.config.frac_bits
        unit = 2.0 ** -f
        model = MODELS.get(event.op, _default)
        try:
            with np.errstate(all="ignore"):
                expected, tolerance, problems = model(self, event, args, kwargs, f)
        except Exception as exc:  # noqa: BLE001 - the replay is the user's call on public values
            raise ValidationError(f"{event.op} at {event.where}: its float64 replay failed "
                                  f"({type(exc).__name__}: {exc}), so it cannot be checked. [{BANNER}]") from exc
        expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), actual.shape)
        for problem in problems:
            if np.any(problem.mask):
                self._fail(event, problem.reason, problem.mask, np.abs(problem.values), actual, expected,
                           offending=problem.values)
        limit = fixedpoint.max_magnitude(f)
        beyond = ~(np.abs(expected) < limit)
        if np.any(beyond):
            self._fail(event, f"the exact result leaves the encodable range |v| < 2^{62 - f} = {limit:.3g} "
                              f"at frac_bits={f}, so the ring wraps", beyond, np.abs(expected), actual, expected)
        tolerance = np.broadcast_to(tolerance + unit * 1e-6 + np.abs(expected) * 2.0 ** -48, actual.shape)
        error = np.abs(actual - expected)
        wrong = ~(error <= tolerance)
        if np.any(wrong):
            self._fail(event, self._why(event, error, f), wrong, error - tolerance, actual, expected,
                       tolerance=tolerance)

    def _why(self, event: Event, error: np.ndarray, f: int) -> str:
        if self.ctx.truncation == "local" and np.max(error) > 2.0 ** (60 - 2 * f) / 16:
            return (f"a local truncation failure (off by about 2^(64 - 2f) = {2.0 ** (64 - 2 * f):.3g}; it happens "
                    "with probability about |v| 2^(2f - 64) per element of a product v): run with "
                    "truncation='exact' (the default under securenn) to rule it out")
        return ("the result is off by more than the documented error although the inputs are inside the "
                "documented ranges: please report this as a bug in mpcnp, with the program")

    def _fail(self, event: Event, reason: str, mask: np.ndarray, score: np.ndarray, actual: np.ndarray,
              expected: np.ndarray, tolerance: np.ndarray | None = None, offending: np.ndarray | None = None) -> None:
        """Raise the ValidationError for the flagged element (``mask``) with the largest ``score``."""
        shape = actual.shape
        mask = np.broadcast_to(mask, shape)
        score = np.nan_to_num(np.broadcast_to(np.asarray(score, dtype=np.float64), shape), nan=np.inf)
        scores = np.where(mask, score, -np.inf)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(scores)), shape)) if actual.size else ()
        detail = ""
        if actual.size:
            if offending is not None:
                detail += f": the offending value is {np.broadcast_to(offending, shape)[index]:.10g}"
            detail += (f"{';' if detail else ':'} the private result is {actual[index]:.10g}, float64 gives "
                       f"{expected[index]:.10g}")
            if tolerance is not None:
                detail += f" (allowed error {np.broadcast_to(tolerance, shape)[index]:.3g})"
        count = int(np.count_nonzero(mask))
        raise ValidationError(f"{event.op} at {event.where}, element {index} (of {count} flagged){detail}; "
                              f"reason: {reason}. [{BANNER}]")


# ---- error models: (expected, tolerance, problems) per operation ---------------------------------------------
def _replay(event: Event, args, kwargs) -> np.ndarray:
    return np.asarray(event.replay(*args, **kwargs).value, dtype=np.float64)


def _values(args) -> list[np.ndarray]:
    """The float64 values of the tensor operands (shadows and public tensors), in order."""
    out = []
    for a in args:
        if isinstance(a, PublicTensor):
            out.append(a.value)
        elif isinstance(a, (list, tuple)):
            out.extend(v.value for v in a if isinstance(v, PublicTensor))
    return out


def _private_count(event: Event) -> int:
    count = 0
    for a in event.args:
        if isinstance(a, PrivateTensor):
            count += 1
        elif isinstance(a, (list, tuple)):
            count += sum(isinstance(v, PrivateTensor) for v in a)
    return count


def _outside(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ~((values >= lo) & (values <= hi))


def _exact(units: float = 1.0) -> Callable:
    """Local and exact operations: a unit for a public operand's rounding (``units``)."""
    def model(v, event, args, kwargs, f):
        return _replay(event, args, kwargs), units * 2.0 ** -f, []
    return model


def _default(v, event, args, kwargs, f):
    expected = _replay(event, args, kwargs)
    return expected, 2.0 ** -f + np.abs(expected) * 2.0 ** -(f + 1), []


def _headroom(expected: np.ndarray, f: int, shift: int | None = None) -> Problem:
    """A product's untruncated value |v| 2^(f + shift) must stay below 2^62 (shift = f for a product of
    two private values, more for a small public factor)."""
    shift = f if shift is None else shift
    bound = 2.0 ** (62 - f - shift)
    return Problem(~(np.abs(expected) < bound), np.abs(expected),
                   f"the product is beyond the ring's headroom |x y| < 2^(62 - 2f) = {bound:.3g} at frac_bits={f}: "
                   "its truncation cannot be exact (25-50% wrong up to twice the bound, garbage beyond)")


def _product(v, event, args, kwargs, f):
    """Products (mul, matmul, conv2d): a unit for the truncation of a product of two private values,
    whose exact value must lie inside the headroom. A public integral factor multiplies exactly; a
    public real factor is rounded to f significant bits (fixedpoint.encode_factor), which adds
    (|x| (op) max |factor|) 2^-(f + 1), and its product with the shares must lie inside the
    headroom of its own scale."""
    expected = _replay(event, args, kwargs)
    unit = 2.0 ** -f
    if _private_count(event) >= 2:
        return expected, unit, [_headroom(expected, f)]
    public = next(a for a in event.args if not isinstance(a, PrivateTensor))
    factor = np.asarray(public.value if isinstance(public, PublicTensor) else public, dtype=np.float64)
    if np.all(factor == np.round(factor)) and np.all(np.abs(factor) < 2.0 ** 31):
        return expected, 0.0, []
    top = float(np.max(np.abs(factor))) if factor.size else 0.0
    magnitudes = [PublicTensor(np.abs(a.value)) if isinstance(e, PrivateTensor) else
                  PublicTensor(np.full(np.shape(factor), top)) if e is public else a
                  for a, e in zip(args, event.args)]
    spread = np.abs(_replay(event, magnitudes, kwargs))
    shift = fixedpoint.encode_factor(factor, f)[1]
    return expected, unit + spread * 2.0 ** -(f + 1), [_headroom(expected, f, shift)]


def _divide_public(v, event, args, kwargs, f):
    """x / c: integers within two units (exact division; local is within one unless it fails); reals
    as a product with 1 / c."""
    expected = _replay(event, args, kwargs)
    divisor = _plain(event.args[1])
    unit = 2.0 ** -f
    if np.all(divisor == np.round(divisor)):
        return expected, 2 * unit, []
    return expected, unit + np.abs(expected) * 2.0 ** -(f - 1), []


def _comparison(v, event, args, kwargs, f):
    """securenn: exact (public operands enter rounded to the unit, so the replay rounds them too).
    pond: the step, accurate for |d| in [0.25, 16]."""
    quantized = [PublicTensor(np.rint(a.value * 2.0 ** f) * 2.0 ** -f) if isinstance(a, PublicTensor) else a
                 for a in args]
    expected = _replay(event, quantized, kwargs)
    if v.family.exact:
        return expected, 0.0, []
    a, b = [np.asarray(x.value if isinstance(x, PublicTensor) else x, dtype=np.float64) for x in quantized[:2]]
    gap = np.abs(np.broadcast_to(a - b, np.shape(expected)))
    if event.op in ("eq", "ne"):
        # pond's == is [|x - y| <= 0.5], documented as such: compare with that, not with exact equality
        same = (gap <= 0.5).astype(np.float64)
        expected = same if event.op == "eq" else 1.0 - same
        band = (gap > STEP_BAND) & (gap < 3 * STEP_BAND) | (gap > STEP_BOUND - 0.5)
        reason = ("pond's == counts |x - y| <= 0.25 as equal, 0.75 <= |x - y| <= 15.5 as different, and "
                  "anything else as unknown: the difference is outside those bands")
    else:
        band = (gap < STEP_BAND) | (gap > STEP_BOUND)
        reason = (f"pond's comparison is the step polynomial, unknown for |x - y| < {STEP_BAND} (equal values "
                  f"included) and meaningless beyond {STEP_BOUND}: the difference is outside [{STEP_BAND}, "
                  f"{STEP_BOUND}]; use protocol='securenn' for exact comparisons")
    return expected, 5e-6 + 3 * 2.0 ** -f, [Problem(band, gap, reason)]


def _plain(value) -> np.ndarray | None:
    """An operand as float64 (None stays None)."""
    if value is None:
        return None
    return np.asarray(value.value if isinstance(value, PublicTensor) else value, dtype=np.float64)


_BOUND_POSITION = {"relu": 1, "abs": 1, "maximum": 2, "minimum": 2, "clip": 3, "maxpool2d": 3}


def _bound_of(event: Event, args, kwargs) -> float | None:
    """The ``bound`` the operation was called with (a keyword or its position), None without one."""
    if "bound" in kwargs:
        return kwargs["bound"]
    position = _BOUND_POSITION.get(event.op)
    return args[position] if position is not None and len(args) > position else None


def _beyond_promise(bound: float) -> str:
    return (f"the input breaks the promised bound |x| < {bound:g}, beyond which securenn's bounded comparison "
            "may silently pick the wrong side: pass a larger bound (or None, exact for every input)")


def _relu_like(doubled: int = 1) -> Callable:
    """relu, abs, maximum, minimum, clip: exact under securenn; pond's polynomial ReLU on
    [-bound, bound] within 0.0044 bound + 10 bound units (per ReLU), applied to x (relu, abs),
    a - b (maximum, minimum), lo - x and x - hi (clip)."""
    def model(v, event, args, kwargs, f):
        expected = _replay(event, args, kwargs)
        promised = _bound_of(event, args, kwargs)
        if v.family.exact and (event.op == "relu_polynomial" or promised is None):
            return expected, 0.0, []
        bound = RELU_BOUND if promised is None else promised
        x = _plain(args[0])
        if event.op in ("maximum", "minimum"):
            inputs = np.abs(x - _plain(args[1]))
        elif event.op == "clip":
            sides = [_plain(a) for a in (list(args[1:3]) + [kwargs.get("lo"), kwargs.get("hi")])]
            inputs = functools.reduce(np.maximum, [np.abs(x - side) for side in sides if side is not None],
                                      np.zeros_like(x))
        else:
            inputs = np.abs(x)
        inputs = np.broadcast_to(inputs, np.shape(expected))
        if v.family.exact:
            return expected, 0.0, [Problem(~(inputs < bound), inputs, _beyond_promise(bound))]
        tolerance = doubled * (0.0044 * bound + 10 * bound * 2.0 ** -f)
        reason = (f"the ReLU's input is outside [-{bound}, {bound}], where pond's polynomial ReLU is accurate "
                  "(meaningless beyond): pass a larger bound")
        return expected, tolerance, [Problem(inputs > bound, inputs, reason)]
    return model


def _product_relu(v, event, args, kwargs, f):
    """dense_relu, conv2d_relu: the product's model (``_product``: its truncation's unit, a public
    factor's rounding, the headroom) on the pre-activation x (op) w + bias, then the ReLU's
    (``_relu_like``) on it: a promised bound under securenn, pond's polynomial interval."""
    fn = functions.dense_relu if event.op == "dense_relu" else functions.conv2d_relu
    call = inspect.signature(fn).bind(*event.args, **event.kwargs)
    shadows = inspect.signature(fn).bind(*args, **kwargs)
    call.apply_defaults()
    shadows.apply_defaults()
    linear = {} if event.op == "dense_relu" else \
        {"stride": call.arguments["stride"], "padding": call.arguments["padding"]}
    product = Event("matmul" if event.op == "dense_relu" else "conv2d", (call.arguments["x"], call.arguments["weight"]),
                    linear, None, event.where, functions.matmul if event.op == "dense_relu" else functions.conv2d)
    z, tolerance, problems = _product(v, product, (shadows.arguments["x"], shadows.arguments["weight"]), linear, f)
    z = functions.add_bias(z, _plain(shadows.arguments["bias"]), channels=event.op == "conv2d_relu")
    bound = {"bound": call.arguments["bound"]}
    relu = Event("relu", (PublicTensor(z),), bound, None, event.where, functions.relu)
    expected, relu_tolerance, relu_problems = _relu_like()(v, relu, (PublicTensor(z),), bound, f)
    return expected, tolerance + relu_tolerance, problems + relu_problems


def _interval(lo: float, hi: float, error: Callable, what: str, exact_family_ok: bool = False,
              exact_hi: float | None = None) -> Callable:
    """An approximation accurate on [lo, hi] within ``error(x, y, unit)``; under securenn with
    ``exact_family_ok`` the input is clamped exactly first (any input, or x <= exact_hi)."""
    def model(v, event, args, kwargs, f):
        expected = _replay(event, args, kwargs)
        x = _values(args)[0]
        unit = 2.0 ** -f
        if v.family.exact and exact_family_ok:
            bad = x > exact_hi if exact_hi is not None else np.zeros(np.shape(x), bool)
            top = f"(-inf, {exact_hi}]"
        else:
            bad = _outside(x, lo, hi)
            top = f"[{lo}, {hi}]"
        clamped = np.clip(x, lo, hi if exact_hi is None else exact_hi)
        reason = f"the input is outside {top}, where {what} is accurate (meaningless outside)"
        return expected, error(clamped, expected, unit), [Problem(bad, x, reason)]
    return model


def _reciprocal(v, event, args, kwargs, f):
    lo, hi = kwargs.get("interval", event.args[1] if len(event.args) > 1 else RECIPROCAL_INTERVAL)
    model = _interval(lo, hi, lambda x, y, u: 2.5 * (1 + np.abs(y)) * u, "Newton's reciprocal")
    return model(v, event, args, kwargs, f)


def _roots(kind: str) -> Callable:
    def model(v, event, args, kwargs, f):
        expected = _replay(event, args, kwargs)
        x = _values(args)[0]
        unit = 2.0 ** -f
        if v.family.exact:
            top = 2.0 ** (62 - f) if kind == "log" else 2.0 ** (2 * ((60 - f) // 2) + 2)
            lo, hi, what = unit, top, "the exact range reduction"
        else:
            (lo, hi), what = (LOG_INTERVAL if kind == "log" else ROOT_INTERVAL), "pond's Newton iteration and series"
        root = np.sqrt(np.clip(x, lo, hi))
        tolerance = {("sqrt", True): (3e-7 + 3 * unit) * root + 3 * unit,
                     ("rsqrt", True): (3e-7 + 4 * unit) / root + 4 * unit,
                     ("log", True): 6 * unit + 1e-7,
                     ("sqrt", False): 16 * (1 + root) * unit,
                     ("rsqrt", False): 5 * (1 + 1 / root) * unit,
                     ("log", False): 100 * unit + 2e-7}[kind, bool(v.family.exact)]
        reason = f"the input is outside [{lo:.3g}, {hi:.3g}), where {kind} by {what} is accurate"
        return expected, tolerance, [Problem(~((x >= lo) & (x < hi)), x, reason)]
    return model


def _divide(v, event, args, kwargs, f):
    """mp.divide: securenn floor(x 2^f / y) / 2^f for 2^-f <= y < 2^(62 - b - f), |x / y| < 2^b;
    pond x * reciprocal(y) for y in (0.05, 100)."""
    expected = _replay(event, args, kwargs)
    x, y = [np.asarray(a.value if isinstance(a, PublicTensor) else a, dtype=np.float64) for a in args[:2]]
    x, y = np.broadcast_arrays(x, y)
    unit = 2.0 ** -f
    if v.family.exact:
        b = kwargs.get("integer_bits", event.args[2] if len(event.args) > 2 else 12)
        top = 2.0 ** (62 - b - f)
        bad = ~((y >= unit) & (y < top) & (np.abs(x) < 2.0 ** b * np.abs(y)))
        reason = (f"mp.divide needs 2^-f <= y < 2^(62 - integer_bits - f) = {top:.3g} and |x / y| < "
                  f"2^integer_bits = {2 ** b} (integer_bits={b}, frac_bits={f})")
        return expected, unit, [Problem(bad, np.where(bad, y, 0.0), reason)]
    lo, hi = RECIPROCAL_INTERVAL
    bad = _outside(y, lo, hi)
    return expected, np.abs(x) * 2.5 * (1 + 1 / np.clip(y, lo, hi)) * unit + unit, [
        Problem(bad, y, f"pond divides by the reciprocal, accurate for y in [{lo}, {hi}]")]


def _where(v, event, args, kwargs, f):
    """securenn reads a private condition as [cond >= 0.5] and selects exactly; pond weighs by it."""
    cond, a, b = (np.asarray(x.value if isinstance(x, PublicTensor) else x, dtype=np.float64) for x in args[:3])
    unit = 2.0 ** -f
    if not isinstance(event.args[0], PrivateTensor):
        return np.where(cond != 0, a, b), unit, []
    off = np.minimum(np.abs(cond), np.abs(cond - 1))
    if v.family.exact:
        return np.where(cond >= 0.5, a, b), 0.0, []
    expected = np.where(cond >= 0.5, a, b)
    reason = ("pond's where weighs a and b by the condition, which is not 0.0 or 1.0 here (a comparison "
              "inside the step's band?)")
    shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    return expected, unit + (5e-6 + 3 * unit) * np.abs(a - b), [
        Problem(np.broadcast_to(off > 1e-3, shape), np.broadcast_to(off, shape), reason)]


def _approx_max(v, event, args, kwargs, f):
    """max/min/argmax/argmin/maxpool2d: exact under securenn. Pond's tournament compares with the
    step: values must lie within 16 of each other; a maximum within 0.25 of the next value may come
    out as a blend of the two (tolerance 0.25), and its position is then unknown."""
    expected = _replay(event, args, kwargs)
    if v.family.exact:
        bound = _bound_of(event, args, kwargs)
        if bound is None:
            return expected, 0.0, []
        # a window beyond the bound is flagged at its pooled output
        windows = _plain(args[0])
        _, view = pool_windows(args[1], kwargs.get("stride", args[2] if len(args) > 2 else None), "maxpool2d")
        largest = np.abs(view(windows)).max(axis=(4, 5), initial=0.0)
        return expected, 0.0, [Problem(~(largest < bound), largest, _beyond_promise(bound))]
    values = _values(args)[0]
    shape = np.shape(expected)
    spread = float(np.ptp(values)) if values.size else 0.0
    problems = [Problem(np.full(shape, spread > STEP_BOUND), np.full(shape, spread),
                        f"pond's tournament compares with the step, meaningless for values more than "
                        f"{STEP_BOUND} apart")]
    if not event.op.startswith("arg"):
        return expected, STEP_BAND + 8 * 2.0 ** -f, problems
    axis = kwargs.get("axis", event.args[1] if len(event.args) > 1 else None)
    ranked = np.sort(values.reshape(-1) if axis is None else np.moveaxis(values, axis, -1), axis=-1)
    ends = ranked[..., :2] if event.op == "argmin" else ranked[..., -2:]
    gap = np.abs(ends[..., 1] - ends[..., 0]) if ranked.shape[-1] > 1 else np.full(ranked.shape[:-1], np.inf)
    problems.append(Problem(np.broadcast_to(gap < STEP_BAND, shape), np.broadcast_to(gap, shape),
                            f"the extreme value is within {STEP_BAND} of the next one, where pond's step cannot "
                            "tell them apart: its position is unknown"))
    # the position moves by step(gap) times an index difference (< n) at each of the levels
    n = ranked.shape[-1]
    levels = max(1, math.ceil(math.log2(max(n, 2))))
    return expected, levels * (n * (5e-6 + 3 * 2.0 ** -f) + 2.0 ** -f), problems


MODELS: dict[str, Callable] = {
    **{op: _exact() for op in ("add", "sub", "rsub", "neg", "sum", "reshape", "transpose", "getitem",
                               "concat", "stack", "pad")},
    "mul": _product, "matmul": _product, "rmatmul": _product, "conv2d": _product,
    "truediv": _divide_public, "mean": _exact(2.0), "avgpool2d": _exact(2.0),
    **{op: _comparison for op in ("lt", "le", "gt", "ge", "eq", "ne")},
    "relu": _relu_like(), "relu_polynomial": _relu_like(), "maximum": _relu_like(), "minimum": _relu_like(),
    "dense_relu": _product_relu, "conv2d_relu": _product_relu,
    "abs": _relu_like(2), "clip": _relu_like(2),
    **{op: _approx_max for op in ("max", "min", "argmax", "argmin", "maxpool2d")},
    "where": _where, "divide": _divide, "reciprocal": _reciprocal,
    "softmax": lambda v, event, args, kwargs, f: _softmax(v, event, args, kwargs, f),
    "sigmoid": _interval(-10, 10, lambda x, y, u: 7.7e-5 + 8 * u, "pond's sigmoid polynomial", True),
    "tanh": _interval(-5, 5, lambda x, y, u: 1.6e-4 + 14 * u, "pond's tanh polynomial", True),
    "exp": _interval(EXP_LO, EXP_HI, lambda x, y, u: (40 * np.abs(y) + 3) * u, "exp's polynomial", True, EXP_HI),
    "step": _interval(-STEP_BOUND, STEP_BOUND, lambda x, y, u: 5e-6 + 3 * u, "the step polynomial"),
    "sqrt": _roots("sqrt"), "rsqrt": _roots("rsqrt"), "log": _roots("log"),
    "pow": lambda v, event, args, kwargs, f: _power(event, args, kwargs, f),
}


def _power(event, args, kwargs, f):
    expected = _replay(event, args, kwargs)
    x = _values(args)[0]
    k = int(event.args[1])
    unit = 2.0 ** -f
    tolerance = (k * np.abs(x) ** max(k - 1, 0) + 1) * k * unit
    top = np.abs(x) ** (2 ** int(math.floor(math.log2(k)))) if k else np.zeros_like(x)
    largest = np.maximum(np.abs(expected), top)
    return expected, tolerance, [_headroom(largest, f)]


def _softmax(v, event, args, kwargs, f):
    """(30 p + 3) units on an output p, 60 p from frac_bits 20 (the reciprocal's scale is capped);
    pond needs x - mean(x) in [-16, 6] along the axis."""
    expected = _replay(event, args, kwargs)
    unit = 2.0 ** -f
    tolerance = ((30 if f < 20 else 60) * expected + 3) * unit
    if v.family.exact:
        return expected, tolerance, []
    x = _values(args)[0]
    axis = kwargs.get("axis", event.args[1] if len(event.args) > 1 else -1)
    centred = x - x.mean(axis=axis, keepdims=True)
    reason = f"pond's softmax needs x - mean(x) in [{EXP_LO}, {EXP_HI}] along the axis (exp's interval)"
    return expected, tolerance, [Problem(_outside(centred, EXP_LO, EXP_HI), centred, reason)]
