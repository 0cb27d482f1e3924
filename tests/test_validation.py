"""Validation mode, mp.run(..., validate=True) (mpcnp.validation): it says loudly that it reveals
everything, lets correct programs through under both protocols, and stops at the first operation that
leaves its documented range or differs from float64, naming the operation, the user's line, the worst
element and the reason."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mpcnp as mp
from mpcnp import validation
from mpcnp.protocols import families

HERE = __file__


def validated(fn, *, protocol="securenn", **kwargs):
    """mp.run(fn, validate=True) with its warning caught; the ValidationError if one is raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", validation.ValidationWarning)
        try:
            return mp.run(fn, protocol=protocol, validate=True, parties=["alice"], **kwargs)
        except mp.PartyError as exc:
            cause = exc.cause
            assert isinstance(cause, validation.ValidationError), exc
            return cause


def line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` (in a comment), for the error's file:line."""
    with open(HERE) as source:
        return next(i for i, text in enumerate(source, 1) if marker in text and "line_of" not in text)


def test_it_says_loudly_that_it_reveals_everything():
    with pytest.warns(validation.ValidationWarning, match="REVEALS EVERY PRIVATE VALUE TO EVERY PARTY.*test data only"):
        mp.run(lambda: None, validate=True)


@pytest.mark.parametrize("protocol", ["securenn", "pond"])
def test_a_correct_program_runs_through(protocol):
    """Every kind of operation, on data chosen inside pond's intervals too: multiples of 0.5 (so no
    comparison below falls inside the step's band of 0.25 around its threshold) and distinct minima."""
    a = np.array([[0.5, -1.5, 2.0], [1.0, 3.0, -0.5], [-2.0, 0.0, 1.5], [2.5, -1.0, -2.5]])
    b = np.array([[1.0, -1.0], [0.0, 2.0], [-1.0, 1.0]])
    image, kernel = np.arange(25.0).reshape(1, 1, 5, 5) / 25, np.ones((2, 1, 3, 3)) / 9

    def program():
        x = mp.private(lambda: a, owner="alice")
        w = mp.private(lambda: b, owner="alice")
        y = x @ w + 0.5                                                      # multiples of 0.5
        z = mp.where(y > 1.25, y, -y) * 0.3 - x.mean()
        s = mp.sigmoid(mp.clip(z, -4.0, 4.0, bound=16)) + mp.exp(mp.minimum(y, 2.25, bound=16) / 2) / 3
        t = mp.divide(s, abs(y) + 1.0) + mp.relu(z) + mp.softmax(y / 4).sum(axis=1, keepdims=True)
        u = mp.sqrt(s + 1.0) + mp.log(s + 1.0) + (x.max(axis=0) == x[0]).sum() + x.argmin(axis=1)[0] + (x[0] ** 2).sum()
        c = mp.conv2d(mp.private(lambda: image, owner="alice"), kernel, padding="same")
        return t.reveal(), u.reveal(), c.reveal()

    results = validated(program, protocol=protocol)
    assert isinstance(results, dict), results


def test_a_product_beyond_the_headroom():
    def program():
        x = mp.private(lambda: np.array([1.0, 4.0e4, 2.0]), owner="alice")
        return (x * x).reveal()   # headroom marker

    error = validated(program)
    message = str(error)
    assert message.startswith(f"mul at {HERE}:{line_of('headroom marker')}, element (1,)")
    assert "beyond the ring's headroom |x y| < 2^(62 - 2f) = 1.07e+09 at frac_bits=16" in message
    assert "REVEALS EVERY PRIVATE VALUE" in message


def test_a_local_truncation_failure():
    """At frac_bits 24, |v| = 1e4 fails locally with probability 1e4 2^(48 - 64) = 0.15 per element:
    200 elements all pass with probability 0.85^200 < 2^-46."""
    def program():
        x = mp.private(lambda: np.full(200, 100.0), owner="alice")
        return (x * x).reveal()   # truncation marker

    error = validated(program, frac_bits=24, truncation="local")
    message = str(error)
    assert f"mul at {HERE}:{line_of('truncation marker')}" in message
    assert "a local truncation failure" in message and "truncation='exact'" in message
    assert "float64 gives 10000" in message


def test_an_input_outside_an_approximations_interval_under_pond():
    def program():
        x = mp.private(lambda: np.array([0.0, 3.0, -12.5, 9.0]), owner="alice")
        return mp.sigmoid(x).reveal()   # interval marker

    message = str(validated(program, protocol="pond"))
    assert f"sigmoid at {HERE}:{line_of('interval marker')}, element (2,)" in message
    assert "the input is outside [-10, 10]" in message and "offending value is -12.5" in message
    # under securenn sigmoid clamps exactly: the same program is fine
    assert isinstance(validated(program), dict)


RELU_4 = lambda t: mp.relu(t, bound=4)  # noqa: E731


@pytest.mark.parametrize("fn, where", [(lambda t: mp.maximum(t, 0.5), (1,)), (lambda t: mp.clip(t, -1.0, 1.0), (1,)),
                                       (RELU_4, (1,)), (lambda t: abs(t), (1,))])
def test_an_input_beyond_ponds_relu_bound(fn, where):
    def program():
        return fn(mp.private(lambda: np.array([0.5, 9.5, -3.0]), owner="alice")).reveal()

    message = str(validated(program, protocol="pond"))
    assert f"element {where}" in message and "the ReLU's input is outside" in message
    assert "pass a larger bound" in message
    if fn is RELU_4:        # securenn takes an explicit bound as a promise, and names the input beyond it
        message = str(validated(program))
        assert f"element {where}" in message and "the offending value is 9.5" in message
        assert "breaks the promised bound |x| < 4" in message
    else:
        assert isinstance(validated(program), dict)   # exact under securenn without a bound


@pytest.mark.parametrize("call, where", [
    (lambda t, b: mp.relu(t, b), (0, 0, 1, 2)),                      # the bound by position
    (lambda t, b: mp.maximum(t, 0.0, bound=b), (0, 0, 1, 2)),
    (lambda t, b: mp.maxpool2d(t, 2, bound=b), (0, 0, 0, 1)),        # the window holding -6
])
def test_securenn_names_an_input_beyond_a_promised_bound(call, where):
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 1, 2] = -6.0

    def program(bound):
        return lambda: call(mp.private(lambda: x, owner="alice"), bound).reveal()

    assert isinstance(validated(program(6.5)), dict)            # |x| < 6.5: kept, exact
    message = str(validated(program(6.0)))                      # |x| = 6 breaks |x| < 6
    assert f"element {where}" in message and "breaks the promised bound |x| < 6" in message


def test_a_comparison_inside_ponds_band():
    def program():
        x = mp.private(lambda: np.array([1.0, 2.1, 5.0]), owner="alice")
        return (x > 2.0).reveal()

    message = str(validated(program, protocol="pond"))
    assert "gt at" in message and "element (1,)" in message and "unknown for |x - y| < 0.25" in message


def test_a_division_outside_its_range():
    def program():
        x = mp.private(lambda: np.array([1.0, 5000.0]), owner="alice")
        y = mp.private(lambda: np.array([2.0, 1.0]), owner="alice")
        return mp.divide(x, y).reveal()

    message = str(validated(program))
    assert "divide at" in message and "element (1,)" in message and "|x / y| < 2^integer_bits = 4096" in message


def test_a_sum_that_leaves_the_encodable_range():
    def program():
        x = mp.private(lambda: np.full(4, 2.0 ** 45), owner="alice")
        return x.sum().reveal()

    assert "leaves the encodable range |v| < 2^46" in str(validated(program))


def test_a_wrong_result_inside_the_ranges_is_reported_as_a_bug(monkeypatch):
    broken = families.FAMILIES["securenn"]
    monkeypatch.setattr(type(broken), "relu", lambda self, ctx, x, bound: x)   # relu forgot its zeroing

    def program():
        return mp.relu(mp.private(lambda: np.array([1.0, -2.0]), owner="alice")).reveal()

    message = str(validated(program))
    assert "relu at" in message and "element (1,)" in message and "please report this as a bug" in message


def test_without_validation_nothing_is_revealed_along_the_way():
    def program():
        x = mp.private(lambda: np.ones(3), owner="alice")
        before = mp.stats()["messages_sent"]
        x * x + 1
        return mp.stats()["messages_sent"] - before

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", validation.ValidationWarning)
        plain = mp.run(program, parties=["alice"])
        checked = mp.run(program, parties=["alice"], validate=True)
    assert plain["alice"] == 0 and checked["alice"] > 0
