"""Module-level functions of API.md on private and public tensors: linear algebra and layout.

Comparisons and ReLU live in ``mpcnp.comparisons``, the approximations in ``mpcnp.approx``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from mpcnp import ring
from mpcnp.protocols import pond
from mpcnp.runtime.context import current
from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor, as_private, plain, shape_proxy

__all__ = ["matmul", "concat", "stack", "pad", "conv2d", "avgpool2d", "truncation"]


def matmul(a, b):
    """a @ b with NumPy's shape rules, for any mix of private and public operands."""
    if isinstance(a, Tensor):
        return a @ b
    if isinstance(b, Tensor):
        return b.__rmatmul__(a)
    return PublicTensor(np.matmul(plain(a), plain(b)))


def _join(seq: Sequence, join) -> Tensor:
    seq = list(seq)
    if not seq:
        raise ValueError("need at least one tensor to join")
    if not any(isinstance(t, PrivateTensor) for t in seq):
        return PublicTensor(join([plain(t) for t in seq]))
    ctx = current()
    parts = [as_private(t, ctx) for t in seq]
    if ctx.is_server:
        share = join([p.share for p in parts])
        return PrivateTensor(ctx, pond.Shared(share, share.shape))
    shape = join([shape_proxy(p.shape) for p in parts]).shape
    return PrivateTensor(ctx, pond.Shared(None, shape))


def concat(seq: Sequence, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (np.concatenate); private if any part is."""
    return _join(seq, lambda arrays: np.concatenate(arrays, axis=axis))


def stack(seq: Sequence, axis: int = 0) -> Tensor:
    """Join tensors along a new axis (np.stack); private if any part is."""
    return _join(seq, lambda arrays: np.stack(arrays, axis=axis))


def pad(x, pad_width) -> Tensor:
    """Zero padding as ``np.pad(x, pad_width)`` (constant mode, value 0)."""
    if isinstance(x, PrivateTensor):
        return x._linear(lambda a: np.pad(a, pad_width))
    return PublicTensor(np.pad(plain(x), pad_width))


def conv2d(x, w, stride=1, padding=0) -> Tensor:
    """2-D convolution (cross-correlation, as in deep learning) of NCHW ``x`` with (out, in, kh, kw) ``w``.

    ``stride`` an int or pair; ``padding`` an int, a pair, "valid" or "same" (output ceil(H / stride),
    TensorFlow's split of the padding). Private operands use Pond's conv-shaped triples: the masks
    opened are input- and kernel-sized, not im2col-sized (PETS Table 1: 2 rounds,
    8 (2 m^2 f^2 i + 2 f^2 o i + m^2 o) bytes at most, less here since masks are not im2col-expanded).
    """
    op = pond.conv2d_op(stride, padding)
    if isinstance(x, PrivateTensor):
        return x._product(w, op)
    if isinstance(w, PrivateTensor):
        return w._product(x, op, reverse=True)
    # Public conv in float64 through the same im2col rule, for exact agreement with private results.
    return PublicTensor(_float_conv2d(plain(x), plain(w), stride, padding))


def _float_conv2d(x: np.ndarray, w: np.ndarray, stride, padding) -> np.ndarray:
    ((ph0, ph1), (pw0, pw1)), (sh, sw) = ring.conv2d_geometry(x.shape, w.shape, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph0, ph1), (pw0, pw1)))
    return np.einsum("nchwij,ocij->nohw", ring.windows(xp, *w.shape[2:], sh, sw), w)


def pool_windows(kernel, stride, name: str):
    """For a pooling function ``name`` with ``kernel`` (an int or pair) and ``stride`` (None: the
    kernel): ((kh, kw), a function from an NCHW array to its (N, C, OH, OW, kh, kw) window view).
    ValueError for a kernel or stride below 1, an array not NCHW, or one smaller than the window."""
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else tuple(kernel)
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if np.isscalar(stride) else tuple(stride))
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"pooling kernel and stride must be positive, got kernel {kernel}, stride {stride}")

    def view(a: np.ndarray) -> np.ndarray:
        if a.ndim != 4:
            raise ValueError(f"{name} expects an NCHW tensor, got shape {a.shape}")
        if a.shape[2] < kh or a.shape[3] < kw:
            raise ValueError(f"pooling window {(kh, kw)} is larger than the input's {tuple(a.shape[2:])}")
        return ring.windows(a, kh, kw, sh, sw)

    return (kh, kw), view


def avgpool2d(x, kernel, stride=None) -> Tensor:
    """Average pooling of NCHW ``x`` over kernel windows (an int or pair); stride defaults to kernel.

    Local on shares: a sum of window elements and a division by the window size.
    """
    (kh, kw), view = pool_windows(kernel, stride, "avgpool2d")

    def window_sum(a: np.ndarray) -> np.ndarray:
        return view(a).sum(axis=(-2, -1), dtype=a.dtype)

    if isinstance(x, PrivateTensor):
        return x._linear(window_sum) / (kh * kw)
    return PublicTensor(window_sum(plain(x)) / (kh * kw))


@contextlib.contextmanager
def truncation(mode: str) -> Iterator[None]:
    """Within the block, products truncate and divisions by public integers (``x / 3``, ``mean``,
    ``avgpool2d``) divide ``"local"``ly (the default) or ``"exact"``ly.

    Local truncation (SecureML) is free but yields garbage with probability about |v| * 2^(2f - 64)
    per element of a product v, and local division about |x| * 2^(f - 64) per element of x; exact
    truncation (protocols.pond.truncate_exact) is always within one unit in the last place and exact
    division (pond.divide_exact) within two, each for one extra bit product (40 bytes per element,
    one round). Use it for long runs, large tensors or frac_bits above 16. Every party must enter the
    block (SPMD).
    """
    if mode not in pond.TRUNCATIONS:
        raise ValueError(f"unknown truncation {mode!r}; choose one of {', '.join(pond.TRUNCATIONS)}")
    ctx = current()
    previous = ctx.state.get("truncation", "local")
    ctx.state["truncation"] = mode
    try:
        yield
    finally:
        ctx.state["truncation"] = previous
