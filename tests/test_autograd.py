"""Reverse-mode gradients (mpcnp.autograd, mpcnp.vjp) against NumPy.

Each operation's gradient of sum(f(x) * c) is computed privately, the cotangent c shared too so that
the gradients flowing back are private tensors, and compared with central differences of the same
code run on public tensors, i.e. NumPy float64 (helpers.numeric_gradient): a reference that knows
nothing of the gradient rules. Inputs are multiples of 2^-16 (``quantize``) and stay h = 2^-12 away
from kinks (relu at 0, ties of a maximum), where central differences would average two slopes.

Tolerances, in units u = 2^-16: layout operations and sums are exact in the ring (atol 1e-9 covers
float64's rounding in the reference); every truncated product costs at most one unit (exact
truncation), so a gradient that adds up k of them is within k u; approximations add their documented
error (mpcnp.approx) times |c|. Each test states its k.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mpcnp as mp
from helpers import ULP, assert_within, numeric_gradient, plain_forward, private_gradients, quantize
from strategies import broadcastable_pair, grid_arrays, matmul_shapes, real_arrays, shapes

EXACT = 1e-9
FEW = settings(max_examples=15)


def values(shape, bound: float = 8.0):
    """Multiples of 2^-16 with |v| <= bound (edges included: 0, +-1 unit, +-bound)."""
    return real_arrays(shape, bound=bound).map(quantize)


def check(fn, arrays, wants, cotangent, atol, private_mask=None, protocol="securenn", backend="threads"):
    """The private gradients against central differences; ``atol`` one bound per wanted operand (or
    one for all), broadcastable to its shape."""
    got = private_gradients(fn, arrays, wants, cotangent, private_mask, protocol, backend=backend)
    indices = [i for i, wanted in enumerate(wants) if wanted]
    bounds = atol if isinstance(atol, list) else [atol] * len(indices)
    for grad, i, bound in zip(got, indices, bounds):
        assert_within(grad, numeric_gradient(fn, arrays, i, cotangent), bound)


def cotangent_for(data, fn, arrays, bound: float = 4.0):
    return data.draw(values(plain_forward(fn, arrays).shape, bound))


def copies(out_shape, shape) -> int:
    """How many elements of the broadcast result each element of ``shape`` feeds."""
    return max(1, int(np.prod(out_shape)) // max(1, int(np.prod(shape))))


# ---- elementwise arithmetic ----------------------------------------------------------------------------
@FEW
@given(st.data(), st.sampled_from(["add", "sub", "rsub", "neg"]))
def test_add_sub_neg_with_broadcasting(data, op):
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "rsub": lambda x, y: 2.5 - x + y,
          "neg": lambda x, y: -x - y}[op]
    arrays = data.draw(st.tuples(*(values(s) for s in data.draw(broadcastable_pair()))))
    check(fn, arrays, [True, True], cotangent_for(data, fn, arrays), EXACT)


@FEW
@given(st.data())
def test_multiply_with_broadcasting(data):
    a, b = data.draw(st.tuples(*(values(s, 6.0) for s in data.draw(broadcastable_pair()))))
    fn = lambda x, y: x * y  # noqa: E731
    c = cotangent_for(data, fn, (a, b))
    # each gradient element adds up k truncated products (k = broadcast copies): k units
    check(fn, (a, b), [True, True], c, [(copies(c.shape, a.shape) + 0.01) * ULP,
                                          (copies(c.shape, b.shape) + 0.01) * ULP])
    # a public factor: b is rounded to 16 significant bits (relative 2^-17), then one truncation
    scaled = np.abs(np.broadcast_to(b, c.shape) * c)
    check(fn, (a, b), [True, False], c, copies(c.shape, a.shape) * (ULP * 1.01 + scaled.max(initial=0) * 2.0 ** -16),
          private_mask=[True, False])


@FEW
@given(st.data())
def test_x_times_x_accumulates_both_uses(data):
    x = data.draw(values(data.draw(shapes), 6.0))
    fn = lambda t: t * t + t  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), 2.01 * ULP)   # two truncated products


@FEW
@given(st.data(), st.sampled_from([1, 2, 3, 7, -5, 0.5, 2.5, -0.75]))
def test_divide_by_public(data, divisor):
    x = data.draw(values(data.draw(shapes)))
    fn = lambda t: t / divisor  # noqa: E731
    c = cotangent_for(data, fn, (x,))
    # integers: exact division within two units; reals: 1/d rounded to 16 significant bits, truncated
    check(fn, (x,), [True], c, 2.01 * ULP + np.abs(c / divisor) * 2.0 ** -16)


@FEW
@given(st.data())
def test_where_with_a_private_condition(data):
    a, b = data.draw(st.tuples(*(values(s) for s in data.draw(broadcastable_pair()))))
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    cond = data.draw(hnp.arrays(np.float64, out_shape, elements=st.sampled_from([0.0, 1.0])))
    fn = lambda k, x, y: mp.where(k, x, y)  # noqa: E731
    c = cotangent_for(data, fn, (cond, a, b))
    # g * cond: one truncated product per element, summed over the broadcast copies
    check(fn, (cond, a, b), [False, True, True], c, [(copies(c.shape, a.shape) + 0.01) * ULP,
                                                      (copies(c.shape, b.shape) + 0.01) * ULP])


# ---- reductions and layout ------------------------------------------------------------------------------
@FEW
@given(st.data())
def test_sum_mean_reshape_transpose(data):
    x = data.draw(values(data.draw(shapes)))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1)) if x.ndim else None
    keepdims = data.draw(st.booleans())
    fn = lambda t: t.sum(axis=axis, keepdims=keepdims)  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)
    if x.size and (axis is None or x.shape[axis]):
        fn = lambda t: t.mean(axis=axis, keepdims=keepdims)  # noqa: E731
        check(fn, (x,), [True], cotangent_for(data, fn, (x,)), 2.01 * ULP)   # one exact division
    for fn in (lambda t: t.T, lambda t: t.flatten(), lambda t: t.reshape(-1, 1),
               lambda t: t.transpose(*reversed(range(t.ndim))),
               lambda t: t.transpose(tuple(np.roll(np.arange(t.ndim), 1)))):   # not its own inverse
        check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)


@FEW
@given(st.data())
def test_indexing_basic_and_with_repeated_integers(data):
    x = data.draw(values(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)))
    index = data.draw(hnp.basic_indices(x.shape, allow_ellipsis=True))
    fn = lambda t: t[index]  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)
    rows = data.draw(st.lists(st.integers(-x.shape[0], x.shape[0] - 1), min_size=1, max_size=6))
    fn = lambda t: t[np.array(rows)]  # noqa: E731 - repeated rows add up
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)


@FEW
@given(st.data())
def test_concat_stack_pad(data):
    base = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    other = list(base)
    other[axis] = data.draw(st.integers(0, 3))
    a, b = data.draw(values(base)), data.draw(values(tuple(other)))
    fn = lambda x, y: mp.concat([x, y * 1.0], axis=axis)  # noqa: E731 - y * 1.0: a second path
    check(fn, (a, b), [True, True], cotangent_for(data, fn, (a, b)), EXACT)
    axis = data.draw(st.integers(-len(base) - 1, len(base)))
    fn = lambda x: mp.stack([x, -x, x], axis=axis)  # noqa: E731
    check(fn, (a,), [True], cotangent_for(data, fn, (a,)), EXACT)
    widths = data.draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                 st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2)) for _ in base])))
    fn = lambda x: mp.pad(x, widths)  # noqa: E731
    check(fn, (a,), [True], cotangent_for(data, fn, (a,)), EXACT)


# ---- products ---------------------------------------------------------------------------------------------
@FEW
@given(st.data())
def test_matmul_every_shape_rule(data):
    a_shape, b_shape = data.draw(matmul_shapes(4))
    a, b = data.draw(values(a_shape, 4.0)), data.draw(values(b_shape, 4.0))
    fn = lambda x, y: x @ y  # noqa: E731
    c = cotangent_for(data, fn, (a, b))
    # G @ B^T truncates once per element; batch broadcasting adds up to (batch size) of them
    k = int(np.prod(c.shape[:-2])) if c.ndim > 2 else 1
    check(fn, (a, b), [True, True], c, (k + 0.01) * ULP)
    check(lambda x, y: mp.matmul(x, y), (a, b), [True, True], c, (k + 0.01) * ULP)
    if a.ndim == 2 and b.ndim == 2:      # ndarray @ tensor: the reflected product
        check(lambda x, y: x.value @ y if isinstance(x, mp.PublicTensor) else np.asarray(x) @ y, (a, b),
              [False, True], c, (k + 0.01) * ULP + np.abs(a).max(initial=0) * np.abs(c).sum() * 2.0 ** -16,
              private_mask=[False, True])


@FEW
@given(st.data())
def test_a_public_operand_of_matmul(data):
    a_shape, b_shape = data.draw(matmul_shapes(4))
    a, b = data.draw(values(a_shape, 4.0)), data.draw(values(b_shape, 4.0))
    fn = lambda x, y: x @ y  # noqa: E731
    c = cotangent_for(data, fn, (a, b))
    k = int(np.prod(c.shape[:-2])) if c.ndim > 2 else 1
    # the public data x: G's rows against it, a local product with a real factor (16 significant bits)
    spread = np.abs(np.asarray(a)).max(initial=0) * np.abs(c).sum() * 2.0 ** -16
    check(fn, (a, b), [False, True], c, k * (ULP * 1.01 + spread), private_mask=[False, True])


@st.composite
def conv_case(draw):
    n, chans, out = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    padding = draw(st.sampled_from([0, 1, (1, 0), "same", "valid"]))
    stride = draw(st.sampled_from([1, 2, (2, 1)]))
    pad_h, pad_w = (2, 2) if padding in (1, "same") else ((2, 0) if padding == (1, 0) else (0, 0))
    kh, kw = draw(st.integers(1, min(3, h + pad_h))), draw(st.integers(1, min(3, w + pad_w)))
    if padding == "same":
        kh, kw = min(kh, h + 1), min(kw, w + 1)
    return (n, chans, h, w), (out, chans, kh, kw), stride, padding


@FEW
@given(st.data(), conv_case())
def test_conv2d(data, case):
    x_shape, w_shape, stride, padding = case
    x, w = data.draw(values(x_shape, 4.0)), data.draw(values(w_shape, 4.0))
    fn = lambda a, b: mp.conv2d(a, b, stride=stride, padding=padding)  # noqa: E731
    c = cotangent_for(data, fn, (x, w))
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    # dx: every input gathers at most ceil(kh/sh) ceil(kw/sw) truncated sums; dw: one
    overlap = -(-w_shape[2] // sh) * -(-w_shape[3] // sw)
    check(fn, (x, w), [True, True], c, [(overlap + 0.01) * ULP, 1.01 * ULP])
    # public data, private kernel (a first layer): the local product rounds the data to 16 bits
    spread = np.abs(x).max(initial=0) * np.abs(c).sum() * 2.0 ** -16
    check(fn, (x, w), [False, True], c, ULP * 1.01 + spread, private_mask=[False, True])


# ---- pooling, maxima, relu -----------------------------------------------------------------------------
def distinct(draw, shape, step: float = 0.5):
    """Values of ``shape`` all distinct (at least ``step`` apart, multiples of 2^-16), shuffled."""
    size = int(np.prod(shape))
    order = draw(st.permutations(range(size))) if size else []
    offset = draw(st.sampled_from([0.0, -3.0, 2.0 ** -7]))
    return (np.array(order, dtype=np.float64) * step + offset - size * step / 2).reshape(shape)


@FEW
@given(st.data())
def test_maxpool2d_and_avgpool2d(data):
    n, chans = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    h, w = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    kernel = (data.draw(st.integers(1, h)), data.draw(st.integers(1, w)))
    stride = data.draw(st.sampled_from([None, 1, 2, (1, 2)]))
    x = distinct(data.draw, (n, chans, h, w))
    fn = lambda a: mp.maxpool2d(a, kernel, stride)  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)    # bit products: exact
    fn = lambda a: mp.avgpool2d(a, kernel, stride)  # noqa: E731
    sh, sw = kernel if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    overlap = -(-kernel[0] // sh) * -(-kernel[1] // sw)
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), (2 * overlap + 0.01) * ULP)  # exact divisions


@FEW
@given(st.data())
def test_max_over_axes(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    x = distinct(data.draw, shape)
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1)
                     | st.just(tuple(range(len(shape)))[::-1][:2]))
    keepdims = data.draw(st.booleans())
    fn = lambda a: mp.max(a, axis=axis, keepdims=keepdims)  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)


@FEW
@given(st.data())
def test_relu_from_the_forward_bit(data):
    magnitudes = data.draw(values(data.draw(shapes), 20.0)).__abs__()
    signs = data.draw(hnp.arrays(np.float64, magnitudes.shape, elements=st.sampled_from([-1.0, 1.0])))
    x = signs * (magnitudes + 2.0 ** -6)          # away from the kink at 0
    fn = lambda a: mp.relu(a)  # noqa: E731
    check(fn, (x,), [True], cotangent_for(data, fn, (x,)), EXACT)


def test_relu_gradient_at_zero_is_one():
    # DReLU(0) = 1 (SecureNN's convention), as the forward's bit says
    assert np.array_equal(private_gradients(mp.relu, (np.zeros(3),), [True], np.ones(3))[0], np.ones(3))


@settings(max_examples=8)
@given(st.data())
def test_pond_gradients_through_its_step_polynomial(data):
    # Pond keeps no bit: relu's and the tournament's gradients evaluate its step polynomial, accurate
    # for |x| in [0.25, 16] within 5e-6 + 3 units, then one truncated product
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    magnitudes = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0.25, 7.0))).round(4)
    signs = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))
    x = quantize(signs * magnitudes)
    c = data.draw(values(shape, 4.0))
    check(lambda a: mp.relu(a, bound=8), (x,), [True], c, np.abs(c) * (5e-6 + 3 * ULP) + 1.01 * ULP,
          protocol="pond")
    pooled = distinct(data.draw, (1, 1, 2, 4), step=0.75)     # neighbours 0.75 apart, within [-16, 16]
    fn = lambda a: mp.maxpool2d(a, 2)  # noqa: E731
    c = cotangent_for(data, fn, (pooled,))
    check(fn, (pooled,), [True], c, 2 * (np.abs(c).max() * (5e-6 + 3 * ULP) + 1.01 * ULP), protocol="pond")


# ---- smooth functions ----------------------------------------------------------------------------------
@FEW
@given(st.data(), st.sampled_from(["securenn", "pond"]))
def test_sigmoid_tanh_exp(data, protocol):
    shape = data.draw(shapes)
    c = None
    # sigmoid: s within E = 3.2e-5 + 8u; s - s^2 within E + u (|1 - 2s| <= 1); times c, truncated
    x = data.draw(values(shape, 10.0))
    c = cotangent_for(data, mp.sigmoid, (x,))
    check(mp.sigmoid, (x,), [True], c, 1.25 * (np.abs(c) * (3.2e-5 + 9 * ULP) + ULP), protocol=protocol)
    # tanh: t within E = 6.4e-5 + 14u; 1 - t^2 within 2E + u
    x = data.draw(values(shape, 5.0))
    c = cotangent_for(data, mp.tanh, (x,))
    check(mp.tanh, (x,), [True], c, 1.25 * (np.abs(c) * (2 * 6.4e-5 + 29 * ULP) + ULP), protocol=protocol)
    # exp: e within (40 e^x + 3) u; times c, truncated
    x = data.draw(values(shape, 3.0))
    c = cotangent_for(data, mp.exp, (x,))
    check(mp.exp, (x,), [True], c, 1.25 * (np.abs(c) * (40 * np.exp(x) + 3) * ULP + ULP), protocol=protocol)


@FEW
@given(st.data(), st.sampled_from(["securenn", "pond"]))
def test_softmax(data, protocol):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    x = data.draw(values(shape, 3.0))      # max - min <= 6: inside pond's interval too
    axis = data.draw(st.sampled_from([-1, 0]))
    fn = lambda a: mp.softmax(a, axis=axis)  # noqa: E731
    c = cotangent_for(data, fn, (x,))
    n = x.shape[axis]
    # p within E = 33u each; w = c p within |c| E + u; their sum over n; p times it; the difference
    e = 33 * ULP
    top = np.abs(c).max(initial=0)
    check(fn, (x,), [True], c, 1.25 * (top * e + ULP + n * (top * e + ULP) * (1 + e) + top * n * e + ULP),
          protocol=protocol)


@FEW
@given(st.data())
def test_roots_log_powers_abs_min(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    x = data.draw(grid_arrays(shape, 0.125, 40.0, log=True))
    c = data.draw(values(shape, 4.0))
    # rsqrt and sqrt (mp.rsqrt: within E = (3e-7 + 4u) / sqrt(x) + 4u): sqrt's gradient is g rsqrt / 2,
    # rsqrt's -g out^3 / 2 (3 out^2 E plus the products' units), log's g rsqrt^2 (2 rsqrt E + u)
    e = (3e-7 + 4 * ULP) / np.sqrt(x) + 4 * ULP
    check(mp.sqrt, (x,), [True], c, 1.25 * (np.abs(c) * (e / 2 + ULP) + ULP))
    check(mp.rsqrt, (x,), [True], c, 1.25 * (np.abs(c) * (1.5 * e / x + 3 * ULP) + ULP))
    check(mp.log, (x,), [True], c, 1.25 * (np.abs(c) * (2 * e / np.sqrt(x) + 2 * ULP) + ULP))
    k = data.draw(st.integers(0, 4))
    y = data.draw(values(shape, 2.0))
    fn = lambda a: a ** k  # noqa: E731
    # k y^(k - 1) by repeated squaring: about k units per product, times |y|^(k - 1), times k and g
    check(fn, (y,), [True], c, 1.25 * (np.abs(c) * k * (k * 2.0 ** max(k - 2, 0) + 1) * ULP + 2 * ULP))
    signs = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))
    away = signs * (x + 2.0 ** -6)
    check(mp.abs, (away,), [True], c, EXACT)         # the ReLU's kept bit: exact
    z = distinct(data.draw, shape)
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    fn = lambda a: mp.min(a, axis=axis)  # noqa: E731
    check(fn, (z,), [True], cotangent_for(data, fn, (z,)), EXACT)


@settings(max_examples=3)
@given(st.data())
@pytest.mark.processes
def test_a_sample_on_the_processes_backend(data):
    a_shape, b_shape = data.draw(matmul_shapes(4))
    a, b = data.draw(values(a_shape, 4.0)), data.draw(values(b_shape, 4.0))
    fn = lambda x, y: mp.sigmoid(x @ y)  # noqa: E731
    c = cotangent_for(data, fn, (a, b))
    k = int(np.prod(c.shape[:-2])) if c.ndim > 2 else 1
    # sigmoid's error (3.2e-5 + 9u) |c| reaches every element of a row through the product
    width = max(a.shape[-1] if a.ndim else 1, b.shape[-1] if b.ndim else 1, 1)
    bound = k * width * (np.abs(c).max(initial=0) * 4 * (3.2e-5 + 9 * ULP) + 2 * ULP)
    check(fn, (a, b), [True, True], c, bound, backend="processes")
