"""mp.sqrt, mp.rsqrt and mp.log on dense grids over their whole documented domains at frac_bits
8, 12, 16, 20 and 24, under both protocols, against NumPy on the shared values.

The bounds are docs/api.md's ("Roots and logarithm"), u = 2^-f one unit:
  securenn (exact range reduction): sqrt (3e-7 + 3u) sqrt(x) + 3u, rsqrt (3e-7 + 4u) / sqrt(x) + 4u,
  log 6u + 1e-7, for 2^-f <= x below 2^(62 - f) (roots: 2^(61 - f) for odd f);
  pond: rsqrt 5 (1 + 1/sqrt(x)) u and sqrt 16 (1 + sqrt(x)) u on [0.05, 100], log 100u + 2e-7 on
  [0.05, 20].
The approximation parts (3e-7, 1e-7, 2e-7) are the polynomials' own errors (checked in float64 below);
the unit parts are 1.5 to 2 times the largest measured over the five frac_bits (three runs of
six draws per grid point, exact truncation).
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import chebyshev

import mpcnp as mp
from mpcnp.protocols import polynomial
from helpers import run_private

FRAC_BITS = [8, 12, 16, 20, 24]


def grid(lo: float, hi: float, f: int, count: int = 2500) -> np.ndarray:
    """Multiples of 2^-f spread log-uniformly over [lo, hi) (hi exclusive), both ends' neighbours in."""
    unit = 2.0 ** -f
    points = np.rint(np.geomspace(lo, hi, count) / unit) * unit
    points = np.concatenate([points, [lo, np.ceil(lo / unit) * unit, hi - unit]])
    return np.unique(points[(points >= lo) & (points < hi)])


def exact_domain(f: int, roots: bool) -> tuple[float, float]:
    top = 2.0 ** (2 * ((60 - f) // 2) + 2) if roots else 2.0 ** (62 - f)
    return 2.0 ** -f, top


@pytest.mark.parametrize("frac_bits", FRAC_BITS)
def test_securenn_roots_and_log_over_the_whole_domain(frac_bits):
    f, u = frac_bits, 2.0 ** -frac_bits
    x = grid(*exact_domain(f, roots=True), f)
    got = run_private(mp.sqrt, x, frac_bits=f)
    assert np.all(np.abs(got - np.sqrt(x)) <= (3e-7 + 3 * u) * np.sqrt(x) + 3 * u)
    got = run_private(mp.rsqrt, x, frac_bits=f)
    assert np.all(np.abs(got - 1 / np.sqrt(x)) <= (3e-7 + 4 * u) / np.sqrt(x) + 4 * u)
    x = grid(*exact_domain(f, roots=False), f)
    got = run_private(mp.log, x, frac_bits=f)
    assert np.all(np.abs(got - np.log(x)) <= 6 * u + 1e-7)


@pytest.mark.parametrize("frac_bits", FRAC_BITS)
def test_pond_roots_and_log_on_their_intervals(frac_bits):
    f, u = frac_bits, 2.0 ** -frac_bits
    x = grid(0.05, 100 + u, f)
    got = run_private(mp.rsqrt, x, protocol="pond", frac_bits=f)
    assert np.all(np.abs(got - 1 / np.sqrt(x)) <= 5 * (1 + 1 / np.sqrt(x)) * u)
    got = run_private(mp.sqrt, x, protocol="pond", frac_bits=f)
    assert np.all(np.abs(got - np.sqrt(x)) <= 16 * (1 + np.sqrt(x)) * u)
    x = grid(0.05, 20 + u, f)
    got = run_private(mp.log, x, protocol="pond", frac_bits=f)
    assert np.all(np.abs(got - np.log(x)) <= 100 * u + 2e-7)


def test_the_polynomials_alone():
    t = np.linspace(-1, 1, 200001)
    log_m = chebyshev.chebval(t, polynomial._LOG_MANTISSA)
    assert np.abs(log_m - np.log((t + 3) / 2)).max() < 5e-8
    v = np.linspace(2, 8, 200001)
    assert np.abs(polynomial.RSQRT_MANTISSA.reference(v) - 1 / np.sqrt(v / 2)).max() < 3e-7
    assert np.abs(polynomial.SQRT_MANTISSA.reference(v) - np.sqrt(v / 2)).max() < 3e-7
    z = np.linspace(-1, 1, 200001)
    atanh = chebyshev.chebval(z, polynomial._ATANH_COEF)
    assert np.abs(atanh - 2 * np.arctanh(z * polynomial._ATANH_REACH)).max() < 2e-7


def test_public_inputs_give_numpy():
    x = np.array([0.25, 1.0, 9.0])
    np.testing.assert_array_equal(mp.sqrt(x).value, np.sqrt(x))
    np.testing.assert_array_equal(mp.rsqrt(mp.public(x)).value, 1 / np.sqrt(x))
    np.testing.assert_array_equal(mp.log(x).value, np.log(x))


def test_costs_as_documented():
    """Bytes per element and rounds (docs/api.md): securenn's are those of the batched comparisons
    (30 for the roots, 61 for log) plus a few products; pond's those of its Newton steps."""
    from mpcnp.runtime.context import barrier, current

    def cost(fn, protocol):
        def program():
            x = mp.private(lambda: np.full(10, 3.0), owner="server0")
            barrier(current())
            before = mp.stats()
            fn(x)
            after = mp.stats()
            return after["payload_bytes_sent"] - before["payload_bytes_sent"], after["rounds"] - before["rounds"]

        results = mp.run(program, protocol=protocol)
        return sum(b for b, _ in results.values()) / 10, max(r for _, r in results.values())

    assert cost(mp.sqrt, "securenn") == (4527.2, 17)
    assert cost(mp.rsqrt, "securenn") == (4583.6, 17)
    assert cost(mp.log, "securenn") == (8560.2, 13)
    assert cost(mp.rsqrt, "pond") == (520.0, 21)
    assert cost(mp.sqrt, "pond") == (544.0, 22)
    assert cost(mp.log, "pond") == (792.0, 15)
