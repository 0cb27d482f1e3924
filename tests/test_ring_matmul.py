"""ring.matmul and ring.conv2d: exact against Python-integer references, and bit for bit across kernels."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mpcnp import ring
from strategies import matmul_sizes, ring_arrays, ring_views

MOD = 1 << 64
KERNELS = ring.matmul_kernels()


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b over the integers (object arrays of Python ints), then reduced mod 2^64."""
    product = np.matmul(a.astype(object), b.astype(object))
    return (np.asarray(product, dtype=object) % MOD).astype(np.uint64)


def exact_conv2d(x, w, stride, pads) -> np.ndarray:
    """Cross-correlation by explicit loops over output positions, in Python integers, mod 2^64."""
    (sh, sw), ((pt, pb), (pl, pr)) = stride, pads
    n_img, chans, height, width = x.shape
    hp, wp = height + pt + pb, width + pl + pr
    xp = np.full((n_img, chans, hp, wp), 0, dtype=object)  # Python 0s (np.pad would put int64 zeros)
    xp[:, :, pt:pt + height, pl:pl + width] = x.astype(object)
    n_out, _, kh, kw = w.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = np.zeros((n_img, n_out, oh, ow), dtype=object)
    wo = w.astype(object)
    for n in range(n_img):
        for o in range(n_out):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[n, o, i, j] = int((patch * wo[o]).sum()) % MOD
    return out.astype(np.uint64)


def product(a, b, kernel, out_shape):
    """ring.matmul(a, b) right after freeing a garbage-filled block of the output's size: the allocator
    hands that block back, so an element the kernel fails to write shows up as garbage instead of as a
    correct value left behind by an earlier product of the same shape."""
    garbage = np.full(out_shape, 0x5A5A5A5A5A5A5A5A, dtype=np.uint64)
    del garbage
    return ring.matmul(a, b, kernel=kernel)


@pytest.fixture
def threads():
    """Set ring's thread count inside a test; the previous value is restored afterwards."""
    before = ring.num_threads()
    yield ring.set_num_threads
    ring.set_num_threads(before)


# ---- values ----------------------------------------------------------------------------------------
@settings(max_examples=150)
@given(data=st.data(), m=matmul_sizes, n=matmul_sizes, k=matmul_sizes)
def test_matmul_exact_on_any_layout(data, m, n, k):
    a = data.draw(ring_views((m, k)), label="a")
    b = data.draw(ring_views((k, n)), label="b")
    expected = exact_matmul(a, b)
    for kernel in KERNELS:
        got = product(a, b, kernel, expected.shape)
        assert got.dtype == np.uint64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected, err_msg=kernel)


@settings(max_examples=60)
@given(data=st.data(), m=matmul_sizes, n=matmul_sizes, k=st.integers(0, 12),
       a_batch=st.sampled_from([(), (1,), (3,), (2, 1), (1, 3), (2, 3)]),
       b_batch=st.sampled_from([(), (1,), (3,), (2, 1), (2, 3)]))
def test_matmul_exact_batched_and_broadcast(data, m, n, k, a_batch, b_batch):
    a = data.draw(ring_views(a_batch + (m, k)), label="a")
    b = data.draw(ring_views(b_batch + (k, n)), label="b")
    if data.draw(st.booleans(), label="explicit broadcast view"):  # stride-0 batch axes
        a = np.broadcast_to(a, np.broadcast_shapes(a_batch, b_batch) + (m, k))
    expected = exact_matmul(a, b)
    for kernel in KERNELS:
        np.testing.assert_array_equal(product(a, b, kernel, expected.shape), expected, err_msg=kernel)


# Shapes (batch, m, n, k) beyond the C kernel's blocks (MC 128, KC 256, NC 2048, k chunk 2048 of the
# dot products, 512-column passes of the row kernel) and on each side of its path choices (at most 3
# rows: row kernel; at most 4 columns: dot products; operands read in place up to 16-64 rows / 256
# columns). The last five have the 8.4 M multiply-adds that start a second thread: rows split in grains
# of 16 tiles (across batch items too), or columns for the row kernel.
BLOCK_SHAPES = [
    ((), 1, 1, 1), ((), 3, 600, 40), ((), 4, 17, 300), ((), 9, 1, 2100), ((), 7, 4, 2100),
    ((), 130, 2100, 9), ((), 65, 300, 17), ((), 70, 40, 513), ((), 200, 3, 50), ((), 64, 256, 31),
    ((), 24, 300, 200), ((), 8, 16, 1), ((5,), 9, 17, 310), ((3, 2), 1, 700, 300), ((4,), 40, 5, 600),
    ((), 129, 257, 300), ((), 300, 2100, 20), ((8,), 40, 300, 100), ((), 2, 5000, 1000), ((), 1000, 3, 3000),
]
LAYOUTS = ["c", "a transposed", "b transposed", "b strided", "both reversed"]


def layout(x: np.ndarray, how: str, which: str) -> np.ndarray:
    if how == "c" or (how.startswith("a") and which == "b") or (how.startswith("b ") and which == "a"):
        return x
    if how.endswith("transposed"):  # same values, column-major storage
        return np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)
    if how == "b strided":  # neither axis unit-stride
        wide = np.zeros(x.shape[:-1] + (3 * x.shape[-1],), dtype=np.uint64)
        wide[..., ::3] = x
        return wide[..., ::3]
    return x[..., ::-1, ::-1].copy()[..., ::-1, ::-1]


@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("batch, m, n, k", BLOCK_SHAPES)
def test_kernels_agree_bit_for_bit(batch, m, n, k, how, threads):
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    a = rng.integers(0, MOD, batch + (m, k), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, MOD, batch + (k, n), dtype=np.uint64, endpoint=False)
    a[..., :1, :] = np.uint64(MOD - 1)  # an all-ones row: every product wraps
    expected = np.matmul(a, b)  # NumPy's uint64 matmul wraps mod 2^64 (checked exactly above)
    a, b = layout(a, how, "a"), layout(b, how, "b")
    for nthreads in (1, 2, 5):
        threads(nthreads)
        for kernel in KERNELS:
            np.testing.assert_array_equal(product(a, b, kernel, expected.shape), expected,
                                          err_msg=f"{kernel}, {nthreads} threads")


def test_matmul_misaligned_and_odd_strides():
    raw = np.random.default_rng(5).integers(0, 256, 8 * 200 + 8, dtype=np.uint8)
    a = np.frombuffer(raw.data, dtype=np.uint64, count=200, offset=4).reshape(10, 20)
    assert not a.flags.aligned
    b = np.lib.stride_tricks.as_strided(np.frombuffer(raw.data, dtype=np.uint64, count=200),
                                        shape=(20, 7), strides=(60, 4))  # strides not a multiple of 8
    for kernel in KERNELS:
        np.testing.assert_array_equal(ring.matmul(a, b, kernel=kernel), exact_matmul(a, b))


def test_k_zero_gives_zeros():
    a, b = np.empty((3, 0), np.uint64), np.empty((0, 5), np.uint64)
    for kernel in KERNELS:
        np.testing.assert_array_equal(ring.matmul(a, b, kernel=kernel), np.zeros((3, 5), np.uint64))


# ---- NumPy's shape rules -------------------------------------------------------------------------
SHAPE_PAIRS = [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((4,), (2, 4, 5)), ((2, 3, 4), (4,)), ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)), ((1, 2, 3), (6, 3, 4)), ((2, 1, 2, 3), (4, 3, 2)), ((0, 2, 3), (3, 4)),
    ((2, 0), (0, 3)), ((0,), (0,)), ((7, 1, 1), (1, 1, 5)),
]


@pytest.mark.parametrize("a_shape, b_shape", SHAPE_PAIRS)
def test_matmul_shapes_follow_numpy(a_shape, b_shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, MOD, a_shape, dtype=np.uint64, endpoint=False)
    b = rng.integers(0, MOD, b_shape, dtype=np.uint64, endpoint=False)
    expected = np.asarray(np.matmul(a, b))
    assert ring.matmul_shape(a_shape, b_shape) == expected.shape
    for kernel in KERNELS:
        got = ring.matmul(a, b, kernel=kernel)
        assert isinstance(got, np.ndarray) and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((), (3,)), ((3,), ()), ((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (4,)), ((3,), (4, 5)),
    ((2, 3, 4), (3, 4, 5)), ((2, 1, 3, 4), (3, 4, 4, 5)), ((5, 2, 3, 4), (3, 4, 6)), ((2, 3, 4), (3, 5, 6)),
])
def test_matmul_shape_errors_match_numpy(a_shape, b_shape):
    a, b = np.zeros(a_shape, np.uint64), np.zeros(b_shape, np.uint64)
    with pytest.raises(ValueError) as numpy_error:
        np.matmul(a, b)
    expected = f"{numpy_error.value}; operand shapes {a_shape} and {b_shape}"  # NumPy's, plus the shapes
    for kernel in KERNELS:
        with pytest.raises(ValueError) as ours:
            ring.matmul(a, b, kernel=kernel)
        assert str(ours.value) == expected
    with pytest.raises(ValueError) as ours:
        ring.matmul_shape(a_shape, b_shape)
    assert str(ours.value) == expected


@pytest.mark.parametrize("bad", [np.ones((2, 2), np.int64), np.ones((2, 2)), [[1, 2], [3, 4]], 3])
def test_matmul_refuses_non_uint64(bad):
    good = np.ones((2, 2), np.uint64)
    with pytest.raises(TypeError, match="uint64"):
        ring.matmul(bad, good)
    with pytest.raises(TypeError, match="uint64"):
        ring.matmul(good, bad)


def test_matmul_accepts_byteswapped_uint64():
    a = np.arange(6, dtype=">u8").reshape(2, 3)
    np.testing.assert_array_equal(ring.matmul(a, a.T), exact_matmul(a, a.T))


def test_unknown_kernel_refused():
    x = np.ones((2, 2), np.uint64)
    with pytest.raises(ValueError, match="unknown ring kernel"):
        ring.matmul(x, x, kernel="blas")
    if "c-avx512" not in KERNELS:
        with pytest.raises(ValueError, match="unavailable"):
            ring.matmul(x, x, kernel="c-avx512")


# ---- conv2d ----------------------------------------------------------------------------------------
def padding_of(padding, size, window, stride):
    """Reference padding ((top, bottom), (left, right)), written out from its definition."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for h, k, s in zip(size, window, stride):
            out = -(-h // s)
            total = max((out - 1) * s + k - h, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph), (pw, pw)


@settings(max_examples=60)
@given(data=st.data(), n=st.integers(1, 2), c=st.integers(1, 3), o=st.integers(1, 3),
       h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 3), kw=st.integers(1, 3),
       stride=st.sampled_from([1, 2, (1, 2), (2, 1)]),
       padding=st.sampled_from([0, 1, 2, (1, 0), (0, 2), "same", "valid"]))
def test_conv2d_exact(data, n, c, o, h, w, kh, kw, stride, padding):
    strides = (stride, stride) if isinstance(stride, int) else stride
    pads = padding_of(padding, (h, w), (kh, kw), strides)
    assume(kh <= h + sum(pads[0]) and kw <= w + sum(pads[1]))
    x = data.draw(ring_arrays((n, c, h, w)), label="x")
    weights = data.draw(ring_arrays((o, c, kh, kw)), label="w")
    expected = exact_conv2d(x, weights, strides, pads)
    if padding == "same":
        assert expected.shape[2:] == (-(-h // strides[0]), -(-w // strides[1]))
    assert ring.conv2d_shape(x.shape, weights.shape, stride, padding) == expected.shape
    assert ring.conv2d_geometry(x.shape, weights.shape, stride, padding) == (pads, strides)
    for kernel in KERNELS:
        np.testing.assert_array_equal(ring.conv2d(x, weights, stride, padding, kernel=kernel), expected,
                                      err_msg=kernel)


def test_conv2d_same_pads_the_odd_pixel_after():
    # H = 6, k = 3, s = 2: output 3, total padding (3 - 1) * 2 + 3 - 6 = 1, all of it at the bottom/right
    x = np.arange(36, dtype=np.uint64).reshape(1, 1, 6, 6)
    w = np.ones((1, 1, 3, 3), np.uint64)
    out = ring.conv2d(x, w, 2, "same")
    np.testing.assert_array_equal(out, exact_conv2d(x, w, (2, 2), ((0, 1), (0, 1))))


def test_conv2d_larger_than_one_chunk(monkeypatch):
    monkeypatch.setattr(ring, "_CONV_CHUNK_BYTES", 1)  # one image per im2col chunk
    rng = np.random.default_rng(3)
    x = rng.integers(0, MOD, (3, 2, 5, 4), dtype=np.uint64, endpoint=False)
    w = rng.integers(0, MOD, (4, 2, 2, 3), dtype=np.uint64, endpoint=False)
    np.testing.assert_array_equal(ring.conv2d(x, w, 1, 1), exact_conv2d(x, w, (1, 1), ((1, 1), (1, 1))))


@pytest.mark.parametrize("x_shape, w_shape", [
    ((0, 2, 5, 5), (3, 2, 3, 3)), ((2, 0, 5, 5), (3, 0, 3, 3)), ((2, 2, 5, 5), (0, 2, 3, 3)),
])
def test_conv2d_empty_dims(x_shape, w_shape):
    x, w = np.ones(x_shape, np.uint64), np.ones(w_shape, np.uint64)
    expected = exact_conv2d(x, w, (1, 1), ((1, 1), (1, 1)))
    for kernel in KERNELS:
        np.testing.assert_array_equal(ring.conv2d(x, w, 1, 1, kernel=kernel), expected)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, match", [
    ((1, 3, 5, 5), (2, 4, 3, 3), 1, 0, r"\(1, 3, 5, 5\).*\(2, 4, 3, 3\)"),
    ((1, 1, 2, 2), (1, 1, 3, 3), 1, 0, "larger than the padded input 2x2"),
    ((1, 1, 5, 5), (1, 1, 3, 3), 0, 0, "stride must be >= 1"),
    ((1, 1, 5, 5), (1, 1, 3, 3), (1, 2, 3), 0, "stride must be an int or a pair"),
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, -1, "padding must be >= 0"),
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, "full", "padding must be an int, a pair, 'same' or 'valid'"),
    ((1, 5, 5), (1, 1, 3, 3), 1, 0, r"x must be \(N, C, H, W\)"),
    ((1, 1, 5, 5), (1, 1, 0, 3), 1, 0, "at least 1x1"),
])
def test_conv2d_errors(x_shape, w_shape, stride, padding, match):
    x, w = np.zeros(x_shape, np.uint64), np.zeros(w_shape, np.uint64)
    with pytest.raises(ValueError, match=match):
        ring.conv2d(x, w, stride, padding)
    with pytest.raises(ValueError, match=match):
        ring.conv2d_shape(x_shape, w_shape, stride, padding)


def test_conv2d_refuses_non_uint64():
    with pytest.raises(TypeError, match="uint64"):
        ring.conv2d(np.zeros((1, 1, 3, 3), np.float64), np.zeros((1, 1, 1, 1), np.uint64))
