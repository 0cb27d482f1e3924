"""Running a computation on private inputs and comparing with NumPy on the plaintext."""
from __future__ import annotations

import numpy as np

import mpcnp as mp

FRAC_BITS = 16
ULP = 2.0 ** -FRAC_BITS


def run_private(fn, *arrays, backend: str = "threads", owner: str = "alice", protocol: str = "securenn",
                frac_bits: int = FRAC_BITS, private_mask=None, **run_kwargs):
    """Share each array (owned by ``owner``), apply ``fn`` to the tensors, reveal to every party.

    ``private_mask[i]`` False passes array i as a plain NumPy operand instead. Returns the values
    revealed on ``owner`` and also checks every party saw the same result.
    """
    mask = private_mask or [True] * len(arrays)

    def program():
        tensors = [mp.private(lambda a=a: a, owner=owner) if private else a
                   for a, private in zip(arrays, mask)]
        return fn(*tensors).reveal()

    results = mp.run(program, parties=[owner], backend=backend, protocol=protocol, frac_bits=frac_bits,
                     **run_kwargs)
    first = results[owner]
    for party, value in results.items():
        np.testing.assert_array_equal(value, first, err_msg=f"{party} saw a different result")
    return first


def encoding_error(values: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """How far each value moves when encoded: at most half a unit in the last place."""
    scaled = np.asarray(values, dtype=np.float64) * 2.0 ** frac_bits
    return np.abs(np.rint(scaled) - scaled) * 2.0 ** -frac_bits


def quantize(values: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """The values that encoding actually shares (rounded to multiples of 2^-frac_bits)."""
    return np.rint(np.asarray(values, dtype=np.float64) * 2.0 ** frac_bits) * 2.0 ** -frac_bits


def public_factor_tolerance(private_values: np.ndarray, factor: np.ndarray, op) -> np.ndarray:
    """Error bound of ``private (op) public factor``: one unit for the truncation, plus the factor's
    rounding to FRAC_BITS significant bits (relative 2^-(f+1) of its largest magnitude) carried
    through the op. ``op`` is the bilinear operation (np.multiply, np.matmul, a conv)."""
    factor = np.asarray(factor, dtype=np.float64)
    top = np.abs(factor).max() if factor.size else 0.0
    spread = op(np.abs(np.asarray(private_values, dtype=np.float64)), np.full(factor.shape, top))
    return ULP * 1.01 + np.asarray(spread) * 2.0 ** -(FRAC_BITS + 1)


def assert_within(actual, expected, tolerance) -> None:
    """|actual - expected| <= tolerance elementwise (tolerance broadcasts), with shapes equal."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected)
    bad = error > tolerance
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} elements off by up to {error[bad].max():.3g} "
                           f"(tolerance {np.broadcast_to(tolerance, error.shape)[bad].min():.3g})")
