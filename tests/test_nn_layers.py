"""Every layer of mpcnp.nn, privately (private inputs and private parameters), against its NumPy
forward_plain, with hypothesis drawing shapes (empty and one-element batches, rectangular kernels,
strides, every kind of padding) and values (edges of the range included).

Inputs and parameters are first rounded to multiples of 2^-16 (helpers.quantize): what encoding
shares exactly, so the only error left is the protocol's own. The runs use exact truncation
(``mp.truncation("exact")``), always within one unit, so a tolerance of k units holds with
certainty rather than with the probability of local truncation. k per layer is said where it is set.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpcnp as mp
from mpcnp import nn
from helpers import ULP, assert_within, quantize
from strategies import batch_sizes, conv_cases, pool_cases, real_arrays

OWNER, CLIENT = "owner", "client"
FEW = settings(max_examples=40)
PRODUCT_VALUES = 8.0   # |x|, |w| <= 8 with fan-in <= 27: products below 2^11, far inside the ring


def load_random(layer: nn.Module, data, bound: float = PRODUCT_VALUES) -> nn.Module:
    state = {name: quantize(data.draw(real_arrays(shape, bound=bound), label=name))
             for name, shape in layer.parameter_shapes().items()}
    return layer.load_state_dict(state)


def run_layer(layer: nn.Module, x: np.ndarray, protocol: str = "securenn", backend: str = "threads"):
    """The layer made private by OWNER, applied to CLIENT's private x, revealed to CLIENT."""
    architecture = layer.architecture()

    def program():
        with mp.truncation("exact"):
            private = (layer if mp.party() == OWNER else architecture).private(OWNER)
            return private(mp.private(lambda: x, owner=CLIENT)).reveal(to=CLIENT)

    return mp.run(program, parties=[OWNER, CLIENT], protocol=protocol, backend=backend)[CLIENT]


def check(layer: nn.Module, x: np.ndarray, units: float, protocol: str = "securenn") -> None:
    x = quantize(x)
    assert_within(run_layer(layer, x, protocol), layer.forward_plain(x), units * ULP + 1e-12)


# ---- layers with parameters ----------------------------------------------------------------------
@FEW
@given(batch=batch_sizes, sizes=st.tuples(st.integers(1, 5), st.integers(1, 4)), data=st.data())
def test_dense(batch, sizes, data):
    layer = load_random(nn.Dense(*sizes), data)
    x = data.draw(real_arrays((batch, sizes[0]), bound=PRODUCT_VALUES))
    check(layer, x, units=1)  # one truncation after the exact product of encoded values


@FEW
@given(case=conv_cases(), data=st.data())
def test_conv2d(case, data):
    shape, out_channels, kernel, stride, padding = case
    layer = load_random(nn.Conv2d(shape[1], out_channels, kernel, stride, padding), data)
    check(layer, data.draw(real_arrays(shape, bound=PRODUCT_VALUES)), units=1)  # as Dense


@FEW
@given(batch=batch_sizes, channels=st.integers(1, 3), spatial=st.sampled_from([(), (2, 3)]), data=st.data())
def test_batchnorm_alone_is_its_affine_map(batch, channels, spatial, data):
    layer = nn.BatchNorm(channels, eps=1e-3)
    state = {name: data.draw(real_arrays(shape, bound=PRODUCT_VALUES), label=name)
             for name, shape in layer.parameter_shapes().items()}
    state["running_var"] = np.abs(state["running_var"])   # a variance; eps keeps the division finite
    layer.load_state_dict(state)
    x = quantize(data.draw(real_arrays((batch, channels) + spatial, bound=PRODUCT_VALUES)))
    # the owner's float64 scale and shift are encoded (half a unit each, the scale's times |x|), then
    # one truncation of the product: 1.5 units + |x| / 2 units
    tolerance = (1.5 + 0.5 * np.abs(x)) * ULP + 1e-12
    assert_within(run_layer(layer, x), layer.forward_plain(x), tolerance)


@FEW
@given(batch=batch_sizes, shape=st.sampled_from([(), (3,), (2, 1, 1), (2, 3, 1)]), scale=st.booleans(),
       data=st.data())
def test_affine(batch, shape, scale, data):
    layer = load_random(nn.Affine(shape, scale=scale, shift=True), data)
    check(layer, data.draw(real_arrays((batch, 2, 3, 3), bound=PRODUCT_VALUES)), units=1)


# ---- activations --------------------------------------------------------------------------------
@FEW
@given(x=real_arrays(st.tuples(batch_sizes, st.integers(1, 4))))
def test_relu_is_exact_on_every_encodable_value(x):
    check(nn.ReLU(), x, units=0)   # SecureNN's ReLU: exact


@FEW
@given(x=real_arrays(st.tuples(batch_sizes, st.integers(1, 4)), bound=64.0))
def test_sigmoid_and_tanh(x):
    # mp.sigmoid under securenn: clamped exactly, then within 4.5e-5 + 3.2e-5 + 8 units everywhere;
    # mp.tanh: 9.1e-5 + 6.4e-5 + 14 units (mpcnp.approx's docstrings)
    x = quantize(x)
    assert_within(run_layer(nn.Sigmoid(), x), nn.Sigmoid().forward_plain(x), 7.7e-5 + 8 * ULP)
    assert_within(run_layer(nn.Tanh(), x), nn.Tanh().forward_plain(x), 1.55e-4 + 14 * ULP)


@FEW
@given(x=real_arrays(st.tuples(batch_sizes, st.integers(1, 6)), bound=32.0), axis=st.sampled_from([-1, 1]))
def test_softmax(x, axis):
    x = quantize(x)
    expected = nn.Softmax(axis).forward_plain(x)
    # mp.softmax: (30 p + 3) units on an output p
    assert_within(run_layer(nn.Softmax(axis), x), expected, (30 * expected + 3) * ULP)


# ---- pooling and layout -------------------------------------------------------------------------
@FEW
@given(case=pool_cases(), data=st.data())
def test_maxpool2d_is_exact(case, data):
    shape, kernel, stride = case
    check(nn.MaxPool2d(kernel, stride), data.draw(real_arrays(shape)), units=0)


@FEW
@given(case=pool_cases(), data=st.data())
def test_avgpool2d(case, data):
    shape, kernel, stride = case
    # a local sum, then an exact division by kh * kw: within two units (pond.divide_exact)
    check(nn.AvgPool2d(kernel, stride), data.draw(real_arrays(shape, bound=2.0 ** 20)), units=2)


@FEW
@given(shape=st.tuples(batch_sizes, st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)), data=st.data())
def test_global_avgpool2d(shape, data):
    check(nn.GlobalAvgPool2d(), data.draw(real_arrays(shape, bound=2.0 ** 20)), units=2)  # as AvgPool2d


@FEW
@given(shape=st.tuples(batch_sizes, st.integers(1, 3), st.integers(1, 3), st.integers(1, 2)),
       target=st.sampled_from([(-1,), (0, -1), (-1, 1), (0, 0, -1), ()]), data=st.data())
def test_flatten_reshape_dropout_are_exact(shape, target, data):
    x = data.draw(real_arrays(shape))
    check(nn.Flatten(), x, units=0)
    check(nn.Dropout(0.3), x, units=0)
    per_sample = int(np.prod(shape[1:]))
    if target == () and per_sample != 1:
        target = (per_sample,)
    check(nn.Reshape(target), x, units=0)
    assert nn.Reshape(target).forward_plain(x).shape[0] == shape[0]


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="Dense expects inputs with 3 features"):
        nn.Dense(3, 2).load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)}).forward_plain(
            np.zeros((4, 5)))
    with pytest.raises(ValueError, match="Conv2d expects NCHW inputs with 2 channels"):
        nn.Conv2d(2, 1, 3).forward_plain(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="padding must be"):
        nn.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.Conv2d(1, 1, (3, 2)).load_state_dict({"weight": np.zeros((1, 1, 3, 2)), "bias": np.zeros(1)}) \
            .forward_plain(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match="at least as large as the window"):
        nn.MaxPool2d(3).forward_plain(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match="cannot reshape"):
        nn.Reshape((4,)).forward_plain(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ReLU bound"):
        nn.ReLU(0)
    with pytest.raises(ValueError, match="Dropout: p"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError, match="non-finite"):
        nn.ReLU().forward_plain(np.array([np.nan]))
