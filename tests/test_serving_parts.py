"""The parts of model serving that need no service: model specs, the model store, the cluster file
with its clients, the wire format, and the pools of preprocessed randomness (on mp.run's threads).
The services themselves, over real sockets, are tested in test_serving.py and
test_serving_failures.py. Private results are compared with helpers.error_bound."""
from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import pytest
from helpers import error_bound, load_random
from hypothesis import given, settings
from hypothesis import strategies as st

import mpcnp as mp
from mpcnp import nn
from mpcnp.net import keygen
from mpcnp.protocols import pond
from mpcnp.runtime.clusterfile import write_cluster
from mpcnp.runtime.context import PRODUCER, current
from mpcnp.serving import build, config, pool, wire
from mpcnp.serving import spec as specs
from mpcnp.serving.session import offline_streams
from mpcnp.serving.store import ModelStore

FRAC_BITS = 16
ULP = 2.0 ** -FRAC_BITS


# ---- models ------------------------------------------------------------------------------------------
@st.composite
def models(draw):
    """Small nn models of every served layer type with random weights, and an input batch."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    rows = draw(st.sampled_from([1, 2, 3]))
    if draw(st.booleans()):
        widths = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Dense(a, b))
            if i < len(widths) - 2 and draw(st.booleans()):
                layers.append(nn.ReLU())
        model, input_shape = nn.Sequential(*layers), (widths[0],)
    else:
        channels, out = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        side = draw(st.integers(4, 7))
        padding = draw(st.sampled_from([0, 1, "same"]))
        conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding)
        pool_layer = draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.MaxPool2d(2, 1)]))
        head = nn.Sequential(conv, nn.ReLU(), pool_layer, nn.Flatten())
        probe = load_random(head, rng).forward_plain(np.zeros((1, channels, side, side)))
        model, input_shape = nn.Sequential(conv, nn.ReLU(), pool_layer, nn.Flatten(),
                                           nn.Dense(probe.shape[1], draw(st.integers(1, 4)))), (channels, side, side)
    load_random(model, rng)
    values = draw(st.sampled_from(["normal", "zeros", "edges"]))
    x = {"normal": rng.normal(size=(rows,) + input_shape), "zeros": np.zeros((rows,) + input_shape),
         "edges": rng.choice([-4.0, -ULP, 0.0, ULP, 4.0], size=(rows,) + input_shape)}[values]
    return model, input_shape, x


def _served(spec, params):
    """The nn model a service builds from ``spec``, holding ``params`` (as the service does)."""
    return build.architecture(build.check(spec.to_json())).with_parameters(params)


@settings(max_examples=40)
@given(models())
def test_the_model_a_service_builds_from_the_spec_is_the_nn_model(case):
    model, input_shape, x = case
    spec, params = specs.describe(model, input_shape)
    assert spec.input_shape == tuple(input_shape)
    served = _served(spec, params)
    plain = served.forward_plain(x)
    np.testing.assert_allclose(plain, model.forward_plain(x), rtol=1e-12, atol=1e-12)
    assert plain.shape[1:] == spec.output_shape
    np.testing.assert_array_equal(served.predict_plain(x, "class"), model.predict_plain(x, "class"))


@settings(max_examples=12)
@given(models())
def test_the_private_forward_pass_matches_plaintext(case):
    model, input_shape, x = case
    spec, params = specs.describe(model, input_shape)

    def program():
        tensors = {name: mp.private(lambda v=value: v, owner="owner") for name, value in params.items()}
        net = build.architecture(spec).with_parameters(tensors)
        return net.infer(mp.private(lambda: x, owner="client")).reveal(to="client")

    result = mp.run(program, parties=["owner", "client"], truncation="exact")["client"]
    expected = model.forward_plain(x)
    assert np.all(np.abs(result - expected) <= error_bound(model, x))


def test_every_nn_layer_serves_batch_norms_folded_and_the_class_scale_kept():
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.BatchNorm(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.BatchNorm(3), nn.AvgPool2d(2, 1), nn.Affine((3, 1, 1)), nn.Sequential(
                              nn.GlobalAvgPool2d(), nn.Reshape((3,)), nn.Dropout(0.1)),
                          nn.Dense(3, 4), nn.Tanh(), nn.Dense(4, 2), nn.Sigmoid(), nn.Flatten(), nn.Softmax())
    model.load_state_dict({name: rng.uniform(0.5, 2, shape) if name.endswith("running_var") else
                           rng.normal(scale=0.5, size=shape) for name, shape in model.parameter_shapes().items()})
    model.class_scale = 2.5
    x = rng.normal(size=(3, 1, 6, 6))
    spec, params = specs.describe(model, (1, 6, 6))
    kinds = json.dumps(spec.model)
    assert "BatchNorm" not in kinds and '"Affine"' in kinds     # one folded into the conv, one an Affine
    served = _served(spec, params)
    assert served.class_scale == 2.5 and served.spec() == model.folded().spec()
    np.testing.assert_allclose(served.forward_plain(x), model.forward_plain(x), rtol=1e-9, atol=1e-12)


def test_describe_refuses_what_cannot_be_described_and_the_service_what_it_cannot_run():
    with pytest.raises(ValueError, match="has no value"):
        specs.describe(nn.Sequential(nn.Dense(2, 2)))
    with pytest.raises(ValueError, match="give input_shape"):
        specs.describe(load_random(nn.Sequential(nn.Conv2d(1, 1, 3)), np.random.default_rng(0)))
    with pytest.raises(ValueError, match="does not run on inputs of shape"):
        specs.describe(load_random(nn.Sequential(nn.Conv2d(1, 1, 5)), np.random.default_rng(0)), input_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="not a list"):
        specs.describe([nn.Dense(2, 2)])

    class Gelu(nn.ReLU):
        pass

    spec, _ = specs.describe(nn.Sequential(Gelu()), input_shape=(3,))
    with pytest.raises(ValueError, match="layer 0: unknown layer type 'Gelu'"):
        build.check(spec.to_json())


def _spec(**changes):
    """A spec in format 1, as the servers' files and model files held it before format 2."""
    obj = {"format": 1, "input_shape": [3], "layers": [{"type": "Dense", "in_features": 3, "out_features": 2}],
           "parameters": {"0.weight": [3, 2], "0.bias": [2]}}
    obj.update(changes)
    return obj


def _spec2(model=None, **changes):
    layers = [{"type": "Dense", "args": {"in_features": 3, "out_features": 2}, "attrs": {}}]
    obj = {"format": 2, "input_shape": [3], "output_shape": [2],
           "model": {"type": "Sequential", "args": {"layers": layers}, "attrs": {}} if model is None else model,
           "parameters": {"0.weight": [3, 2], "0.bias": [2]}}
    obj.update(changes)
    return obj


def _nested(depth):
    model = {"type": "Dense", "args": {"in_features": 3, "out_features": 2}}
    for _ in range(depth):
        model = {"type": "Sequential", "args": {"layers": [model]}}
    return model


@pytest.mark.parametrize("obj, message", [
    ([], "JSON object"),
    (_spec(format=3), "format"),
    (_spec(extra=1), "unknown fields"),
    (_spec(layers=[]), "the model's parameters are {}"),
    (_spec(layers=[{"type": "Lambda"}]), "unknown layer type 'Lambda'"),
    (_spec(layers=[{"type": "Dense", "in_features": 3}]), r"missing \['out_features'\]"),
    (_spec(layers=[{"type": "Dense", "in_features": 3, "out_features": -2}]), r"parameters are .*\(3, -2\)"),
    (_spec(layers=[{"type": "ReLU", "bound": 0}, {"type": "Dense", "in_features": 3, "out_features": 2}]),
     "layer 0 .ReLU.: ReLU bound must be None or an integer"),
    (_spec(parameters={"0.weight": [2, 3], "0.bias": [2]}), "the model's parameters are"),
    (_spec(input_shape=[4]), "does not run on inputs of shape"),
    (_spec(input_shape=[]), "must not be empty"),
    (_spec(output_shape=[3]), "disagrees"),
    (_spec2(extra=1), "has the fields"),
    (_spec2(model=[]), "model must be a JSON object"),
    (_spec2(model=_nested(20)), "nest at most 16 deep"),
    (_spec2(model={"type": "Dense", "args": {"in_features": 3, "out_features": 2}}), "a served model is a Sequential"),
    (_spec2(model={"type": "Sequential", "args": {"layers": [{"type": "BatchNorm", "args": {"num_features": 3}}]}},
            parameters={f"0.{n}": [3] for n in ("weight", "bias", "running_mean", "running_var")}),
     "layer 0 is a BatchNorm: upload model.folded"),
    (_spec2(model={"type": "Sequential", "args": {"layers": [{"type": "MaxPool2d", "args": {"kernel": 2},
                                                               "attrs": {"forward": None}}]}}), "no attribute 'forward'"),
    (_spec2(model={"type": "Sequential", "args": {"layers": []}, "attrs": {"class_scale": -1}}), "class_scale must be"),
    (_spec2(model={"type": "Sequential", "args": {"layers": []}, "attrs": {"__class__": 1}}), "attributes are"),
])
def test_the_service_refuses_malformed_specs(obj, message):
    with pytest.raises(ValueError, match=message):
        build.check(obj)


def test_a_format_1_spec_is_read_as_the_same_model():
    spec = build.check(_spec(layers=[{"type": "Dense", "in_features": 3, "out_features": 4},
                                     {"type": "ReLU", "bound": 4}, {"type": "Dropout"},
                                     {"type": "Dense", "in_features": 4, "out_features": 2},
                                     {"type": "ReLU", "bound": 8}],
                             parameters={"0.weight": [3, 4], "0.bias": [4], "3.weight": [4, 2], "3.bias": [2]}))
    net = build.architecture(spec)
    assert [type(layer).__name__ for layer in net] == ["Dense", "ReLU", "Dropout", "Dense", "ReLU"]
    # a calibrated bound stays; the old default 8, which SecureNN ignored, is no promise now
    assert net[1].bound == 4 and net[4].bound is None
    assert spec.output_shape == (2,) and specs.parse(spec.to_json()) == spec


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 65, "é", None, "a b"])
def test_model_names_must_be_safe_file_names(name):
    with pytest.raises(ValueError, match="model name"):
        specs.check_model_name(name)


def test_model_files_round_trip_and_are_private(tmp_path):
    model = load_random(nn.Sequential(nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2)), np.random.default_rng(1))
    path = tmp_path / "m.npz"
    spec = specs.save(path, model)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded, params = specs.load(path)
    assert loaded == spec
    x = np.random.default_rng(2).normal(size=(5, 4))
    np.testing.assert_allclose(_served(loaded, params).forward_plain(x), model.forward_plain(x))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a model file"):
        specs.load(tmp_path / "bad.npz")


# ---- the model store ----------------------------------------------------------------------------------------
def _stored(tmp_path, server="server0", frac_bits=FRAC_BITS):
    spec = build.check(_spec())
    store = ModelStore(tmp_path / "store", server, frac_bits)
    shares = {"0.weight": np.arange(6, dtype=np.uint64).reshape(3, 2), "0.bias": np.array([7, 8], np.uint64)}
    store.put("m", "alice", keygen()[0], "u1", spec, shares)
    return store, spec, shares


def test_the_store_keeps_shares_in_private_files_and_reopens_them(tmp_path):
    store, spec, shares = _stored(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "store").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "store" / "m.model").st_mode) == 0o600
    reopened = ModelStore(tmp_path / "store", "server0", FRAC_BITS)
    meta, read = reopened.shares("m")
    assert (meta.owner, meta.upload, meta.spec) == ("alice", "u1", spec)
    for name, share in shares.items():
        np.testing.assert_array_equal(read[name], share)
    version = reopened.version
    reopened.delete("m")
    assert reopened.version == version + 1 and not (tmp_path / "store" / "m.model").exists()
    assert ModelStore(tmp_path / "store", "server0", FRAC_BITS).catalogue() == {}


def test_files_written_before_format_2_are_read_as_the_same_model(tmp_path):
    """A store file and a model file as the servers and ``save`` wrote them with format-1 specs."""
    old = _spec(output_shape=[2])
    shares = {"0.weight": np.arange(6, dtype=np.uint64).reshape(3, 2), "0.bias": np.array([7, 8], np.uint64)}
    meta = {"format": 1, "model": "m", "server": "server0", "owner": "alice", "owner_key": keygen()[0],
            "upload": "u1", "frac_bits": FRAC_BITS, "spec": old}
    (tmp_path / "store").mkdir(mode=0o700)
    with open(tmp_path / "store" / "m.model", "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **{f"p:{name}": share for name, share in shares.items()})
    stored, read = ModelStore(tmp_path / "store", "server0", FRAC_BITS).shares("m")
    assert stored.spec == build.check(old) and stored.spec.model["type"] == "Sequential"
    np.testing.assert_array_equal(read["0.weight"], shares["0.weight"])
    weight, bias = np.ones((3, 2)), np.array([0.5, -0.5])
    np.savez(tmp_path / "old.npz", spec=np.frombuffer(json.dumps(old, sort_keys=True).encode(), np.uint8),
             **{"p:0.weight": weight, "p:0.bias": bias})
    spec, params = specs.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(_served(spec, params).forward_plain(np.ones((1, 3))), [[3.5, 2.5]])


def test_a_replacement_is_atomic_and_leftovers_are_removed(tmp_path, monkeypatch):
    store, spec, shares = _stored(tmp_path)
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put("m", "alice", store.get("m").owner_key, "u2", spec, shares)
    monkeypatch.setattr(os, "replace", real_replace)
    assert store.get("m").upload == "u1" and ModelStore(tmp_path / "store", "server0", FRAC_BITS).get("m").upload == "u1"
    (tmp_path / "store" / ".tmp-m-dead").write_bytes(b"half a file")
    ModelStore(tmp_path / "store", "server0", FRAC_BITS)
    assert not (tmp_path / "store" / ".tmp-m-dead").exists()


def test_the_store_refuses_files_it_cannot_serve(tmp_path, caplog):
    _stored(tmp_path)
    with caplog.at_level(logging.ERROR, "mpcnp.serving"):
        assert ModelStore(tmp_path / "store", "server1", FRAC_BITS).catalogue() == {}
        assert ModelStore(tmp_path / "store", "server0", 20).catalogue() == {}
        (tmp_path / "store" / "m.model").write_bytes(b"garbage")
        assert ModelStore(tmp_path / "store", "server0", FRAC_BITS).catalogue() == {}
    assert "server0's shares, not server1's" in caplog.text
    assert "frac_bits=16, the service runs at 20" in caplog.text
    assert "cannot read" in caplog.text


# ---- the cluster file and its clients ----------------------------------------------------------------------
ADDRESSES = {"server0": "127.0.0.1:7000", "server1": "127.0.0.1:7002", "producer": "127.0.0.1:7004"}


def test_write_cluster_writes_private_keys_and_a_loadable_file(tmp_path):
    path = write_cluster(tmp_path / "c", ADDRESSES, ["alice"])
    serving = config.load(path)
    assert set(serving.clients) == {"alice"} and serving.client_ports == {"server0": 7001, "server1": 7003}
    assert serving.client_endpoint("server1") == "tcp://127.0.0.1:7003"
    for name in [*ADDRESSES, "alice"]:
        assert stat.S_IMODE(os.stat(tmp_path / "c" / f"{name}.key").st_mode) == 0o600
    public, _ = serving.client_keys("alice")
    assert public == serving.clients["alice"].public_key
    with pytest.raises(FileExistsError):
        write_cluster(tmp_path / "c", ADDRESSES, ["alice"])
    with pytest.raises(ValueError, match="'insecure' is reserved"):
        write_cluster(tmp_path / "d", ADDRESSES, ["insecure"])
    assert not (tmp_path / "d").exists()


def _cluster_obj(tmp_path):
    obj = json.loads(write_cluster(tmp_path / "c", ADDRESSES, ["alice"]).read_text())
    return obj


@pytest.mark.parametrize("change, message", [
    (lambda o: o.update(insecure=True) or [o[n].pop("public_key") for n in ADDRESSES], "serving needs a public_key"),
    (lambda o: o["clients"].update(carol={"public_key": "x" * 39}), "40-character Z85"),
    (lambda o: o["clients"].update(bob=dict(o["clients"]["alice"])), "bob and alice have the same public_key"),
    (lambda o: o["clients"].update(bob={"public_key": o["server0"]["public_key"]}), "bob and server0 have the same public_key"),
    (lambda o: o["clients"].update(bob={"key": "k"}), "unknown field 'key'"),
    (lambda o: o.update(client_ports={"server0": 70000}), "client port of server0"),
    (lambda o: o.update(client_ports={"producer": 7}), "client_ports"),
])
def test_bad_cluster_files_are_refused(tmp_path, change, message):
    obj = _cluster_obj(tmp_path)
    change(obj)
    with pytest.raises(ValueError, match=message):
        config.parse(obj, base_dir=tmp_path / "c")


def test_the_client_directory_is_read_again_for_an_unknown_key(tmp_path, monkeypatch, caplog):
    obj = _cluster_obj(tmp_path)
    obj["client_dir"] = "clients"
    (tmp_path / "c" / "clients").mkdir()
    monkeypatch.setattr(config, "_RELOAD_EVERY", 0.0)
    keys = config.ClientKeys(config.parse(obj, base_dir=tmp_path / "c"))
    public, secret = keygen()
    from zmq.utils import z85
    raw = z85.decode(public.encode())
    assert raw not in keys
    (tmp_path / "c" / "clients" / "carol.pub").write_text(json.dumps({"public_key": public}))
    assert raw in keys and keys[raw] == "carol" and keys.key_of("carol") == public
    other, other_secret = keygen()
    (tmp_path / "c" / "clients" / "dave.pub").write_text(json.dumps({"public_key": other, "secret_key": other_secret}))
    with caplog.at_level(logging.WARNING, "mpcnp.serving"):
        assert z85.decode(other.encode()) not in keys
    assert "no secret key" in caplog.text


# ---- the wire format ---------------------------------------------------------------------------------------
def test_messages_round_trip():
    arrays = [np.arange(6, dtype=np.uint64).reshape(2, 3), np.zeros((0, 4), np.uint64)]
    header, decoded = wire.decode([bytes(f) for f in wire.encode({"op": "x", "id": "1"}, arrays)], "alice")
    assert header == {"op": "x", "id": "1"}
    for a, b in zip(arrays, decoded):
        np.testing.assert_array_equal(a, b)
        assert not b.flags.writeable


@pytest.mark.parametrize("frames, message", [
    ([], "empty"),
    ([b"{nope"], "not JSON"),
    ([b"[1]"], "not a JSON object"),
    ([b'{"arrays": [[2]]}'], "lists 1 arrays, 0 follow"),
    ([b'{"arrays": [[2]]}', b"x" * 15], "15 bytes for shape"),
    ([b'{"arrays": [[-1]]}', b""], "bad shape"),
    ([b'{"arrays": [[true]]}', b"x" * 8], "bad shape"),
])
def test_malformed_messages_name_their_sender(frames, message):
    with pytest.raises(wire.WireError, match=f"from mallory: .*{message}"):
        wire.decode(frames, "mallory")


# ---- pools of preprocessed randomness -------------------------------------------------------------------------
def _pooled_program(spec, params, x, batches: int = 2, tamper=None):
    """On every core party: load the parameters (masked once), trace one batch, refill, then run
    ``batches`` pooled batches; returns the revealed outputs and each pooled batch's bytes sent."""

    def program():
        ctx = current()
        tensors = {name: mp.private(lambda v=value: v, owner="server0") for name, value in params.items()}
        pond.open_masks(ctx, [t._value for t in tensors.values()])
        net = build.architecture(spec).with_parameters(tensors)
        pools = pool.Pools(offline_streams(ctx), items_per_recipe=batches, max_bytes=1 << 30)
        pools.register([t._value.mask for t in tensors.values()])
        key = ("m", "u", "logits", len(x))
        outputs, sent = [], []
        with pools.dealer(key, pooled=False):
            outputs.append(net.infer(mp.private(lambda: x, owner="server0")).reveal())
        assert pools.wanted() == key
        for _ in range(batches):
            pools.refill(ctx, key)
        assert pools.wanted() is None and pools.available(key) == batches
        for _ in range(batches):
            data = mp.private(lambda: x, owner="server0")
            before = mp.stats()["payload_bytes_sent"]
            with pools.dealer(key, pooled=True):
                y = net.infer(data if tamper is None else tamper(data))
            sent.append(mp.stats()["payload_bytes_sent"] - before)
            outputs.append(y.reveal())
        assert pools.available(key) == 0
        return outputs, sent

    return mp.run(program, truncation="exact")


def test_pooled_batches_match_plaintext_and_the_producer_sends_only_online_messages():
    rng = np.random.default_rng(3)
    model = load_random(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Dense(8, 3)), rng)
    spec, params = specs.describe(model, (1, 4, 4))
    x = rng.normal(size=(2, 1, 4, 4))
    results = _pooled_program(spec, params, x)
    expected, bound = model.forward_plain(x), error_bound(model, x)
    outputs, sent = results["server0"]
    for output in outputs:
        assert np.all(np.abs(output - expected) <= bound)
    # pooled, the producer still answers PrivateCompare (its z shares, online) but deals no triple and
    # no mask bits: compare with what it sends dealing inline, measured the same way
    def inline_program():
        ctx = current()
        tensors = {name: mp.private(lambda v=value: v, owner="server0") for name, value in params.items()}
        pond.open_masks(ctx, [t._value for t in tensors.values()])
        data = mp.private(lambda: x, owner="server0")
        before = mp.stats()["payload_bytes_sent"]
        build.architecture(spec).with_parameters(tensors).infer(data)
        return mp.stats()["payload_bytes_sent"] - before

    inline = mp.run(inline_program, truncation="exact")
    pooled_producer = results[PRODUCER][1]
    assert pooled_producer[0] == pooled_producer[1] < inline[PRODUCER] / 4
    for server in ("server0", "server1"):
        assert results[server][1][0] <= inline[server]


def test_a_pooled_dealer_refuses_a_program_its_recipe_does_not_have():
    rng = np.random.default_rng(4)
    model = load_random(nn.Sequential(nn.Dense(3, 2), nn.ReLU(), nn.Dense(2, 2)), rng)
    spec, params = specs.describe(model)
    x = rng.normal(size=(1, 3))
    with pytest.raises(mp.PartyError, match="differs from its recipe|does not have"):
        _pooled_program(spec, params, x, batches=1, tamper=lambda data: data * data)
