"""The helpers every test module shares: running private computations and comparing with NumPy,
protocols on chosen shares, statistics of what a party sees, networks of transports, models, and
the model-serving services."""
from __future__ import annotations

import contextlib
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import zmq

import mpcnp as mp
from mpcnp import nn
from mpcnp.net import CurveConfig, MemoryNetwork, ZmqTransport, keygen
from mpcnp.net.framing import ARRAY, MAGIC, VERSION
from mpcnp.runtime.context import CORE_PARTIES
from mpcnp.serving import config
from mpcnp.serving.service import Service, Settings

FRAC_BITS = 16
ULP = 2.0 ** -FRAC_BITS


def run_private(fn, *arrays, backend: str = "threads", owner: str = "alice", protocol: str = "securenn",
                frac_bits: int = FRAC_BITS, private_mask=None, truncation: str = "exact", **run_kwargs):
    """Share each array (owned by ``owner``), apply ``fn`` to the tensors, reveal to every party.

    ``private_mask[i]`` False passes array i as a plain NumPy operand instead. Returns the values
    revealed on ``owner`` and also checks every party saw the same result. Truncation is exact unless
    asked otherwise: local truncation fails with a small probability per element (tested on its own in
    test_pond.py), which would make the comparisons with NumPy flaky.
    """
    mask = private_mask or [True] * len(arrays)

    def program():
        tensors = [mp.private(lambda a=a: a, owner=owner) if private else a
                   for a, private in zip(arrays, mask)]
        return fn(*tensors).reveal()

    results = mp.run(program, parties=[owner], backend=backend, protocol=protocol, frac_bits=frac_bits,
                     truncation=truncation, **run_kwargs)
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


# ---- gradients ---------------------------------------------------------------------------------------
def plain_forward(fn, arrays):
    """``fn`` applied to the arrays as public tensors: the NumPy float64 forward pass of the same code."""
    return np.asarray(fn(*[mp.public(a) for a in arrays]).value, dtype=np.float64)


def numeric_gradient(fn, arrays, index: int, cotangent, h: float = 2.0 ** -12) -> np.ndarray:
    """d/d arrays[index] of sum(fn(*arrays) * cotangent) by central differences on the float64 forward
    pass (``plain_forward``): independent of the gradient rules. Error O(h^2) for smooth fn (h a power
    of two, so arrays of multiples of 2^-16 move exactly); inputs must keep h away from kinks."""
    base = [np.array(a, dtype=np.float64) for a in arrays]
    grad = np.zeros_like(base[index])
    flat = grad.reshape(-1)
    for k in range(flat.size):
        sides = []
        for step in (h, -h):
            moved = [b.copy() for b in base]
            moved[index].reshape(-1)[k] += step
            sides.append(np.sum(plain_forward(fn, moved) * cotangent))
        flat[k] = (sides[0] - sides[1]) / (2 * h)
    return grad


def private_gradients(fn, arrays, wants, cotangent, private_mask=None, protocol: str = "securenn",
                      frac_bits: int = FRAC_BITS, backend: str = "threads"):
    """The gradients of sum(fn(*xs) * c) for the xs[i] with ``wants[i]``, computed privately: the arrays
    shared by alice (plain operands where ``private_mask[i]`` is False), those wanted given
    requires_grad, the cotangent c shared too (so the gradients flowing back are private), then
    backward() and the gradients revealed. Exact truncation. Returns the list of wanted gradients."""
    mask = private_mask or [True] * len(arrays)

    def program():
        tensors = [mp.private(lambda a=a: a, owner="alice") if private else a for a, private in zip(arrays, mask)]
        for tensor, wanted in zip(tensors, wants):
            if wanted:
                tensor.requires_grad = True
        c = mp.private(lambda: cotangent, owner="alice")
        (fn(*tensors) * c).sum().backward()
        return [t.grad.reveal() for t, wanted in zip(tensors, wants) if wanted]

    results = mp.run(program, parties=["alice"], protocol=protocol, frac_bits=frac_bits, backend=backend,
                     truncation="exact")
    return results["alice"]


# ---- protocols over chosen shares ---------------------------------------------------------------------
L = 1 << 64


def run_core(program, backend: str = "threads", **run_kwargs):
    """mp.run over the core parties only; returns {party: result}."""
    return mp.run(program, backend=backend, **run_kwargs)


def shares_of(values, rng: np.random.Generator, share0=None, modulus: int = L):
    """(share0, share1) as uint64 arrays with share0 + share1 = values (mod modulus); share0 drawn
    from ``rng`` (test data, not a protocol's randomness) if None."""
    values = [int(v) % modulus for v in values]
    if share0 is None:
        share0 = rng.integers(0, modulus - 1, len(values), dtype=np.uint64, endpoint=True).tolist()
    share1 = [(v - int(s)) % modulus for v, s in zip(values, share0)]
    return np.array([int(s) % modulus for s in share0], np.uint64), np.array(share1, np.uint64)


def mine(ctx, share0: np.ndarray, share1: np.ndarray):
    """The Shared this party holds of the value shared as (share0, share1)."""
    from mpcnp.protocols.shared import Shared
    share = {"server0": share0, "server1": share1}.get(ctx.name)
    return Shared(None if share is None else share.copy(), share0.shape)


def reconstruct(results, modulus: int = L) -> list[int]:
    """The values whose shares server0 and server1 returned, as Python integers mod ``modulus``."""
    shares = zip(np.asarray(results["server0"]).reshape(-1), np.asarray(results["server1"]).reshape(-1))
    return [(int(a) + int(b)) % modulus for a, b in shares]


def signed(v: int) -> int:
    """A ring element read as a signed 64-bit integer."""
    return v - L if v >= 1 << 63 else v


def protocol_cost(setup, n: int) -> tuple[float, int]:
    """(payload bytes per element summed over the parties, depth in rounds) of the call that
    ``setup(ctx)`` prepares and returns: inputs are made before the Lamport clocks are equalised (a
    barrier), the call after; the depth is the largest per-party clock increase."""
    from mpcnp.runtime.context import barrier, current

    def program():
        ctx = current()
        call = setup(ctx)
        barrier(ctx)
        before = mp.stats()
        call()
        after = mp.stats()
        return after["payload_bytes_sent"] - before["payload_bytes_sent"], after["rounds"] - before["rounds"]

    results = run_core(program)
    return sum(b for b, _ in results.values()) / n, max(r for _, r in results.values())


# ---- statistics of what a party sees -------------------------------------------------------------------
def chi_square(counts: np.ndarray) -> float:
    """Pearson's statistic of ``counts`` against the uniform distribution over its bins."""
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_limit(dof: int, z: float = 7.5) -> float:
    """Upper quantile of chi-square with ``dof`` degrees of freedom (Wilson-Hilferty) at the standard
    normal quantile ``z``: the default 7.5 leaves a false alarm probability of 3e-14, so that a test
    with a dozen such checks stays below 2^-40."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * np.sqrt(h)) ** 3


# ---- channels -------------------------------------------------------------------------------------------
NAMES = ("server0", "server1", "producer")  # net knows no roles: these are just names
NET_BACKENDS = ("memory", "ipc", "curve")  # the transports tests run on
WAIT = 20.0  # generous: only bounds a failing test, never asserts a duration


def curve_configs(names, keys=None):
    keys = keys or {n: keygen() for n in names}
    return {n: CurveConfig(keys[n][0], keys[n][1], {p: keys[p][0] for p in names if p != n})
            for n in names}


@contextlib.contextmanager
def network(backend, names=NAMES, absent=(), **options):
    """{name: Transport} of a fully connected network on ``backend``; closed on exit.

    ``absent`` parties are configured (address, key) but never come up.
    """
    if backend == "memory":
        net = MemoryNetwork(names)
        try:
            yield {n: net.transport(n) for n in names}
        finally:
            net.close()
        return
    tmp = tempfile.mkdtemp(prefix="mpcnp-test-", dir="/tmp")
    configs = curve_configs(names + absent)
    transports = {}
    try:
        for n in names:
            transports[n] = (ZmqTransport(n, f"ipc://{tmp}/{n}", **options) if backend == "ipc" else
                             ZmqTransport(n, "tcp://127.0.0.1:0", curve=configs[n], **options))
        endpoints = {n: t.endpoint for n, t in transports.items()}
        endpoints.update({n: f"ipc://{tmp}/{n}" if backend == "ipc" else "tcp://127.0.0.1:9"
                          for n in absent})
        for t in transports.values():
            t.connect(endpoints)
        yield transports
    finally:
        for t in transports.values():
            t.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def rogue(transport, routing_id, keys=None):
    """A bare DEALER sending to ``transport`` as ``routing_id``, CURVE with ``keys`` if given."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = routing_id.encode()
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey = (k.encode() for k in keys)
        sock.curve_serverkey = transport.curve.public_key.encode()
    sock.connect(transport.endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()



def run_parties(programs):
    """Run {name: fn()} each in its own thread; returns {name: result}, re-raises the first error."""
    results, errors = {}, {}

    def body(name, fn):
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors[name] = exc

    threads = [threading.Thread(target=body, args=item) for item in programs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a party hung"
    if errors:
        raise next(iter(errors.values()))
    return results


def header(kind=ARRAY, code=8, ndim=1, shape=(1,), magic=MAGIC, version=VERSION):
    """A hand-made header (framing.py layout), to craft malformed messages."""
    return struct.pack(f"<4sBBBBQ{len(shape)}Q", magic, version, kind, code, ndim, 0, *shape)


def finish(procs: dict, timeout: float = 60) -> dict:
    """{name: (stdout, stderr)} of each process once it ended; one still running after ``timeout`` s is
    killed and its stderr marked "HUNG"."""
    outputs = {}
    for name, proc in procs.items():
        try:
            outputs[name] = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs[name] = ("", "HUNG " + proc.communicate()[1])
    return outputs


# ---- models (mpcnp.nn) -----------------------------------------------------------------------------------
OWNER, CLIENT = "owner", "client"

# Largest error of each private activation on exact inputs under securenn (mpcnp.approx's docstrings:
# sigmoid within 4.5e-5 + 3.2e-5 + 8 units, tanh 9.1e-5 + 6.4e-5 + 14 units), and its Lipschitz constant.
ACTIVATION_ERRORS = {nn.ReLU: (0.0, 1.0), nn.Sigmoid: (7.7e-5 + 8 * ULP, 0.25), nn.Tanh: (1.55e-4 + 14 * ULP, 1.0)}


def random_state(model: nn.Module, seed: int, scale: float = 0.5) -> dict:
    """Quantized random values (multiples of 2^-16: encoding is exact); variances positive."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in model.parameter_shapes().items():
        value = rng.normal(0, scale, shape)
        state[name] = quantize(np.abs(value) + 0.5 if name.endswith("running_var") else value)
    return state


def run_model(model: nn.Sequential, x: np.ndarray, output: str = "logits", protocol: str = "securenn",
        backend: str = "threads", non_owner_model: nn.Sequential | None = None) -> dict:
    """OWNER shares ``model`` (the others hold its architecture, or ``non_owner_model``); CLIENT's ``x``
    goes through it with exact truncation; returns every party's ``predict(..., to=CLIENT)``."""
    others = model.architecture() if non_owner_model is None else non_owner_model

    def program():
        with mp.truncation("exact"):
            private = (model if mp.party() == OWNER else others).private(OWNER)
            return private.predict(mp.private(lambda: x, owner=CLIENT), output=output, to=CLIENT)

    return mp.run(program, parties=[OWNER, CLIENT], protocol=protocol, backend=backend)


def _magnitude(layer: nn.Module, weight: np.ndarray) -> nn.Module:
    """``layer``'s architecture with ``weight`` and a zero bias: applies |W| (or ones) to errors."""
    copy = layer.architecture()
    bias = np.zeros(weight.shape[1] if isinstance(layer, nn.Dense) else weight.shape[0])
    return copy.load_state_dict({"weight": weight, "bias": bias})


def error_bound(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """A bound on |private - plaintext| for every output of ``model`` on quantized ``x`` under
    securenn with exact truncation, propagated elementwise from frac_bits:
    - Dense, Conv2d (folded with a BatchNorm after it, if any): |W| applied to the input's error, plus
      1 unit (truncation), plus half a unit per weight and bias as encoded (W |x| with W = 1, + 1)/2;
    - a BatchNorm left alone: its affine map (|scale| e, + 1 unit, + (|x| + 1) / 2 units encoding);
      an Affine likewise (no truncation without a scale);
    - ReLU, Sigmoid, Tanh: Lipschitz constant times e, plus the activation's own error;
    - MaxPool: the largest error of the window; AvgPool: the mean, + 2 units (exact division);
    - layout layers move errors.
    """
    error = np.zeros_like(x)
    layers = [layer for layer in model.layers if not isinstance(layer, nn.Dropout)]
    for i, layer in enumerate(layers):
        folded_before = i > 0 and isinstance(layers[i - 1], (nn.Dense, nn.Conv2d))
        if isinstance(layer, (nn.Dense, nn.Conv2d)):
            weight = layer.param("weight")
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm):
                scale, _ = layers[i + 1].affine_values()
                weight = weight * (scale if isinstance(layer, nn.Dense) else scale.reshape(-1, 1, 1, 1))
            error = (_magnitude(layer, np.abs(weight)).forward_plain(error) + ULP
                     + 0.5 * ULP * (_magnitude(layer, np.ones(weight.shape)).forward_plain(np.abs(x)) + 1))
        elif isinstance(layer, nn.BatchNorm) and not folded_before:
            scale, _ = layer.affine_values()
            shape = (-1,) + (1,) * (x.ndim - 2)
            error = np.abs(scale).reshape(shape) * error + ULP + 0.5 * ULP * (np.abs(x) + 1)
        elif isinstance(layer, nn.Affine):
            weight = np.abs(layer.param("weight")) if layer.scale else 1.0
            error = weight * error + (ULP + 0.5 * ULP * np.abs(x) if layer.scale else 0) + 0.5 * ULP
        elif type(layer) in ACTIVATION_ERRORS:
            own, lipschitz = ACTIVATION_ERRORS[type(layer)]
            error = lipschitz * error + own
        elif isinstance(layer, (nn.MaxPool2d, nn.Flatten, nn.Reshape)):
            error = layer.forward_plain(error)
        elif isinstance(layer, (nn.AvgPool2d, nn.GlobalAvgPool2d)):
            error = layer.forward_plain(error) + 2 * ULP
        elif not isinstance(layer, nn.BatchNorm):
            raise TypeError(f"no error bound for {layer!r}")
        x = layer.forward_plain(x)
    return error


def winning_gaps(logits: np.ndarray) -> np.ndarray:
    """How far each sample is from changing class: the top logit minus the runner-up, or for one
    logit per sample its distance to 0."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return np.abs(logits.reshape(len(logits)))
    ranked = np.sort(logits, axis=-1)
    return ranked[:, -1] - ranked[:, -2]


SERVICE_WAIT = 30.0     # bounds a failing serving test; never a duration asserted
ROOT = Path(__file__).resolve().parent.parent


# ---- model serving: small models, clusters, the services -------------------------------------------------------------------------------------------
def load_random(model: nn.Sequential, rng, scale: float = 0.5) -> nn.Sequential:
    """``model`` with normal random weights of standard deviation ``scale``."""
    return model.load_state_dict({name: rng.normal(scale=scale, size=shape)
                                  for name, shape in model.parameter_shapes().items()})


def mlp(rng) -> nn.Sequential:
    return load_random(nn.Sequential(nn.Dense(64, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 10)),
                       rng, 0.3)


def cnn(rng) -> nn.Sequential:
    return load_random(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                     nn.Dense(64, 10)), rng, 0.3)


def check_prediction(model, x, logits=None, classes=None) -> None:
    """``logits`` within ``error_bound`` of the plaintext model's; ``classes`` equal to its argmax on
    every row whose two largest logits are further apart than twice the bound (no rounding can change
    those)."""
    expected = model.forward_plain(x)
    tolerance = error_bound(model, x)
    if logits is not None:
        assert logits.shape == expected.shape and np.all(np.abs(logits - expected) <= tolerance)
    if classes is not None:
        top2 = np.sort(expected, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * np.max(tolerance, axis=-1)
        np.testing.assert_array_equal(classes[clear], expected.argmax(axis=-1)[clear])


# ---- clusters and services ----------------------------------------------------------------------------------
def make_cluster(directory: Path, clients=("alice", "bob", "carol", "dave", "erin")) -> Path:
    return config.write_local_cluster(directory, clients, client_dir=True)


TEST_ARGS = ["--timeout", "2", "--threads", "1", "--log-level", "warning"]


class Processes:
    """The three services as ``python -m mpcnp serve`` processes, logs in ``directory``."""

    def __init__(self, path: Path, directory: Path, args=()):
        self.path, self.directory, self.args = path, directory, list(args)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, *names: str) -> None:
        for name in names or CORE_PARTIES:
            log = open(self.directory / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "mpcnp", "serve", "--config", str(self.path), "--name", name,
                 "--store", str(self.directory / f"store-{name}"), *TEST_ARGS, *self.args],
                stdout=log, stderr=log, cwd=ROOT)
            log.close()

    def signal(self, name: str, signum: int) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signum)
        return proc.wait(SERVICE_WAIT)

    def stop(self) -> dict[str, int]:
        codes = {}
        for name in list(self.procs):
            codes[name] = self.signal(name, signal.SIGTERM)
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.directory.glob("*.log")))


@contextlib.contextmanager
def processes(tmp_path: Path, args=()):
    path = make_cluster(tmp_path / "cluster")
    services = Processes(path, tmp_path, args)
    services.start()
    try:
        yield services
    finally:
        codes = services.stop()
        assert all(code == 0 for code in codes.values()), (codes, services.logs())


@contextlib.contextmanager
def threads(tmp_path: Path, **settings):
    """The three services as threads of this process (so that a test can look inside them)."""
    path = make_cluster(tmp_path / "cluster")
    serving = config.load(path)
    chosen = Settings(**{"timeout": 2.0, "truncation": "exact", **settings})
    services = {name: Service(serving, name, store=tmp_path / f"store-{name}", settings=chosen) for name in CORE_PARTIES}
    runners = [threading.Thread(target=s.run, daemon=True) for s in services.values()]
    for runner in runners:
        runner.start()
    try:
        yield path, services
    finally:
        for service in services.values():
            service.stop()
        for runner in runners:
            runner.join(SERVICE_WAIT)
        assert not any(r.is_alive() for r in runners), "a service did not stop"


def client(path, name, **kwargs) -> mp.Client:
    c = mp.Client(path, name, timeout=SERVICE_WAIT, **kwargs)
    c.wait_ready(SERVICE_WAIT)
    return c


