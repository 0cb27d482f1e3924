"""mpcnp.nn models: named parameters, private models, Sequential's rewrites, predictions and Pond
calibration, each private result against the same model on NumPy.

Runs use exact truncation (always within one unit), so error bounds hold with certainty; model-level
bounds are propagated layer by layer from frac_bits by ``error_bound``.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpcnp as mp
from mpcnp import nn
from helpers import CLIENT, OWNER, ULP, assert_within, error_bound, quantize, random_state, run_model, winning_gaps


def small_cnn(classes: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.BatchNorm(3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.2), nn.Conv2d(3, 2, (2, 3), stride=(1, 2)), nn.ReLU(), nn.Flatten(),
                         nn.Dense(2 * 2 * 1, 6), nn.ReLU(), nn.Dense(6, classes))


# ---- named parameters ---------------------------------------------------------------------------
def test_parameters_are_named_by_position_and_loaded_by_name():
    model = small_cnn()
    assert list(model.parameter_shapes()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "5.weight", "5.bias",
        "8.weight", "8.bias", "10.weight", "10.bias"]
    state = random_state(model, 0)
    model.load_state_dict(state)
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in state.items())
    assert [p.shape for p in model.parameters()] == [v.shape for v in state.values()]
    with pytest.raises(KeyError, match=r"missing \['10.bias'\], unexpected \['10.b'\]"):
        model.load_state_dict({**{k: v for k, v in state.items() if k != "10.bias"}, "10.b": np.zeros(4)})
    with pytest.raises(ValueError, match=r"'0.weight': expected shape \(3, 1, 3, 3\), got \(3, 3\)"):
        model.load_state_dict({**state, "0.weight": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="'1.bias' holds non-finite values"):
        model.load_state_dict({**state, "1.bias": np.full(3, np.inf)})
    with pytest.raises(ValueError, match="running_var"):
        model.load_state_dict({**state, "1.running_var": -np.ones(3)})


def test_instances_share_no_state():
    a, b = nn.Dense(2, 2), nn.Dense(2, 2)
    a.load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(2)})
    assert b.parameters() == [None, None]
    assert nn.Sequential().class_scale == 1 and nn.Sequential().layers is not nn.Sequential().layers


def test_architecture_keeps_hyperparameters_and_drops_values():
    model = small_cnn().load_state_dict(random_state(small_cnn(), 1))
    model[2].bound, model.class_scale = 5, 0.25
    copy = model.architecture()
    assert copy.parameters() == [None] * len(model.parameters())
    assert copy[2].bound == 5 and copy.class_scale == 0.25
    assert model.parameters()[0] is not None            # the original keeps its values
    with pytest.raises(ValueError, match="'0.weight' has no value"):
        copy.state_dict()


def test_private_model_reveals_its_values_to_the_receivers_only():
    model = nn.Sequential(nn.Dense(3, 2), nn.ReLU(), nn.Dense(2, 1)).load_state_dict(
        random_state(nn.Sequential(nn.Dense(3, 2), nn.ReLU(), nn.Dense(2, 1)), 2))

    def program():
        return (model if mp.party() == OWNER else model.architecture()).private(OWNER).reveal(to=CLIENT)

    results = mp.run(program, parties=[OWNER, CLIENT])
    assert all(results[p] is None for p in results if p != CLIENT)
    assert results[CLIENT].keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(results[CLIENT][name], value)   # quantized: encoded exactly


def test_owner_without_values_is_told_to_load_them():
    def program():
        return nn.Dense(2, 2).private(owner=OWNER)(mp.private(np.ones((1, 2)))).reveal()

    with pytest.raises(mp.PartyError, match="call load_state_dict there first"):
        mp.run(program, parties=[OWNER], timeout=10)


def test_only_the_owners_values_count():
    model = small_cnn().load_state_dict(random_state(small_cnn(), 3))
    decoy = small_cnn().load_state_dict(random_state(small_cnn(), 4))  # what the other parties hold
    x = quantize(np.random.default_rng(5).normal(size=(2, 1, 6, 8)))
    got = run_model(model, x, non_owner_model=decoy)[CLIENT]
    assert_within(got, model.forward_plain(x), error_bound(model, x))


# ---- Sequential's rewrites ----------------------------------------------------------------------
def test_plan_moves_relu_after_pooling_and_merges_relus():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(3), nn.ReLU(9), nn.MaxPool2d(2), nn.Dropout(), nn.Flatten(),
                          nn.Dense(2, 2), nn.Softmax())
    kinds = [type(layer).__name__ for layer in model.plan()]
    assert kinds == ["Conv2d", "MaxPool2d", "Flatten", "ReLU", "Dense", "Softmax"]
    assert [layer.bound for layer in model.plan() if isinstance(layer, nn.ReLU)] == [3]
    assert [type(layer).__name__ for layer in model.plan("class")][-1] == "Dense"
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Sequential(nn.MaxPool2d(2)))
    assert [type(layer).__name__ for layer in nested.plan()] == ["Conv2d", "MaxPool2d", "ReLU"]


def payload_bytes(fn) -> int:
    def program():
        before = mp.stats()["payload_bytes_sent"]
        fn(mp.private(lambda: np.ones((1, 1, 6, 6)), owner=CLIENT))
        return mp.stats()["payload_bytes_sent"] - before

    return sum(mp.run(program, parties=[CLIENT]).values())


def test_relu_after_pooling_costs_four_comparisons_per_window_not_seven():
    conv = nn.Conv2d(1, 2, 3).load_state_dict({"weight": np.ones((2, 1, 3, 3)), "bias": np.zeros(2)})
    pooled = payload_bytes(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)))
    written = payload_bytes(lambda x: mp.maxpool2d(mp.relu(conv(x)), 2))
    linear = payload_bytes(conv)
    windows = 2 * 2 * 2                       # (1, 2, 4, 4) pooled 2x2
    assert (pooled - linear) * 7 == (written - linear) * 4 == windows * 4 * 7 * 221


@settings(max_examples=10)
@given(seed=st.integers(0, 2 ** 16), batch=st.integers(0, 3), height=st.integers(6, 7), width=st.integers(8, 9))
def test_rewritten_private_pass_equals_the_model_as_written(seed, batch, height, width):
    model = small_cnn().load_state_dict(random_state(small_cnn(), seed))
    x = quantize(np.random.default_rng(seed).normal(size=(batch, 1, height, width)))
    assert_within(run_model(model, x)[CLIENT], model.forward_plain(x), error_bound(model, x))


def test_batchnorm_folds_into_the_layer_before_it():
    model = small_cnn().load_state_dict(random_state(small_cnn(), 6))

    def program():
        private = (model if mp.party() == OWNER else model.architecture()).private(OWNER)
        return sorted(private.reveal(to=OWNER) or {})

    names = mp.run(program, parties=[OWNER])[OWNER]
    assert not any(name.startswith("1.") for name in names)   # nothing left of the BatchNorm
    bn_alone = nn.Sequential(nn.ReLU(), nn.BatchNorm(3))
    assert [type(layer).__name__ for layer in bn_alone.plan()] == ["ReLU", "BatchNorm"]


# ---- predictions --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["threads", pytest.param("processes", marks=pytest.mark.processes)])
@pytest.mark.parametrize("classes, seed", [(1, 11), (3, 7), (4, 7)])   # seeds whose data has no near-tie
def test_class_equals_plaintext_and_only_the_client_learns_it(backend, classes, seed):
    model = small_cnn(classes).load_state_dict(random_state(small_cnn(classes), seed, scale=1.0))
    x = quantize(np.random.default_rng(8).normal(size=(16, 1, 6, 8)))
    assert winning_gaps(model.forward_plain(x)).min() > 2 * error_bound(model, x).max()  # no near-tie to flip
    assert len(set(model.predict_plain(x, "class"))) > 1
    results = run_model(model, x, output="class", backend=backend)
    np.testing.assert_array_equal(results[CLIENT], model.predict_plain(x, "class"))
    assert results[CLIENT].dtype == np.int64 and results[CLIENT].shape == (16,)
    assert all(results[p] is None for p in results if p != CLIENT)


def test_class_skips_a_final_softmax():
    model = nn.Sequential(nn.Dense(3, 4), nn.Softmax())
    model.load_state_dict(random_state(model, 9, 2.0))
    x = quantize(np.random.default_rng(10).normal(size=(20, 3)))
    np.testing.assert_array_equal(run_model(model, x, output="class")[CLIENT], model.predict_plain(x, "class"))
    np.testing.assert_array_equal(model.predict_plain(x, "class"), model.forward_plain(x).argmax(1))


def test_bad_output_is_refused():
    with pytest.raises(ValueError, match="output must be one of"):
        nn.Sequential(nn.ReLU()).predict_plain(np.ones((1, 1)), output="proba")


# ---- Pond calibration ---------------------------------------------------------------------------
def wide_mlp(seed: int = 14) -> nn.Sequential:
    """An MLP whose ReLU inputs reach about 40, far beyond the default bound 8 of Pond's ReLU."""
    model = nn.Sequential(nn.Dense(4, 16), nn.ReLU(), nn.Dense(16, 5))
    state = random_state(model, seed, scale=1.0)
    state["0.weight"], state["2.weight"] = quantize(4 * state["0.weight"]), quantize(0.3 * state["2.weight"])
    return model.load_state_dict(state)


def test_calibrate_sizes_relu_bounds_and_class_scale():
    model = wide_mlp()
    x = np.random.default_rng(12).normal(size=(200, 4))
    report = nn.calibrate(model, x, margin=1.5)
    hidden = model[0].forward_plain(x)
    assert model[1].bound == int(np.ceil(1.5 * np.abs(hidden).max())) == report.relu_bounds["1"]
    logits = model.forward_plain(x)
    spread = (logits.max(1) - logits.min(1)).max()
    assert model.class_scale == pytest.approx(16 / (1.5 * spread))
    assert "layer 1" in str(report) and "class_scale" in str(report)


def test_calibrate_names_the_layer_pond_cannot_serve():
    model = nn.Sequential(nn.Dense(2, 2), nn.Sigmoid())
    model.load_state_dict({"0.weight": 20 * np.eye(2), "0.bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"layer 1 \(Sigmoid\): inputs reach 20 .* \[-10, 10\]"):
        nn.calibrate(model, np.ones((3, 2)), output="logits")
    nn.calibrate(model, np.ones((3, 2)), output="class")   # the class is decided before the Sigmoid
    pool = nn.Sequential(nn.MaxPool2d(2))
    nn.calibrate(pool, np.arange(16.0).reshape(1, 1, 4, 4) * 10)
    assert pool[0].pond_scale == 8     # window spread 50, times 1.5, over 16: 4.7, up to a power of two


def test_pond_needs_calibration_and_then_agrees():
    model = wide_mlp()
    rng = np.random.default_rng(14)
    owner_data, client_data = rng.normal(size=(500, 4)), quantize(rng.normal(size=(40, 4)))
    expected = model.predict_plain(client_data, "class")
    uncalibrated = run_model(model, client_data, output="class", protocol="pond")[CLIENT]
    assert np.mean(uncalibrated == expected) < 0.5      # ReLU inputs beyond [-8, 8]: garbage
    nn.calibrate(model, owner_data)
    calibrated = run_model(model, client_data, output="class", protocol="pond")[CLIENT]
    # Pond's ReLU is within 0.0044 B + 10 B units of exact (mp.relu); through the last layer's |W|
    # (row sums) that bounds the logits' error e; the step decides right when the scaled winning gap
    # exceeds its band 0.25: every sample whose gap exceeds 0.25 / class_scale + 2 e must agree
    relu_error = (0.0044 + 10 * ULP) * model[1].bound
    logit_error = np.abs(model[2].param("weight")).sum(axis=0).max() * relu_error + 2 * ULP
    decidable = winning_gaps(model.forward_plain(client_data)) > 0.25 / model.class_scale + 2 * logit_error
    assert decidable.mean() >= 0.4      # the bound is a worst case, hence the modest fraction
    np.testing.assert_array_equal(calibrated[decidable], expected[decidable])
