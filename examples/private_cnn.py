"""Private prediction with a convolutional network: trained in NumPy, exported to ONNX, imported
with ``nn.from_onnx``, and run on a client's digit images that nobody else sees.

The model owner trains a small conv net (conv 3x3 1->8 with "same" padding, ReLU, 2x2 max pooling,
dense 128->10) on scikit-learn's bundled 8x8 digits, in plain NumPy (no deep-learning framework),
writes it to an ONNX file with ``onnx.helper`` and imports that file. Inside ``mp.run`` the owner
shares the weights, the client shares its images, and only the client learns the classes (or the
logits). Max pooling and ReLU run in the order the private pass prefers (pooling first: fewer
comparisons, the same result). Each row is one private run against the owner's plaintext model.

Run: python examples/private_cnn.py [--images N] [--backend threads|processes]
(needs scikit-learn and onnx: pip install "mpcnp[ml]").
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import mpcnp as mp
from mpcnp import nn

OWNER, CLIENT = "model-owner", "client"
CHANNELS, CLASSES = 8, 10


# ---- the model owner's plaintext training, in NumPy --------------------------------------------------
def patches(x: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) -> (N, 64, 9): the 3x3 neighbourhood of every pixel, zero-padded ("same")."""
    padded = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return windows.reshape(len(x), 64, 9)


def forward(params: dict, x: np.ndarray):
    """Logits and what the backward pass needs."""
    cols = patches(x)
    conv = cols @ params["conv"] + params["conv_bias"]                       # (N, 64, C)
    hidden = np.maximum(conv, 0).transpose(0, 2, 1).reshape(len(x), CHANNELS, 8, 8)
    blocks = hidden.reshape(len(x), CHANNELS, 4, 2, 4, 2)
    pooled = blocks.max(axis=(3, 5))                                         # (N, C, 4, 4)
    logits = pooled.reshape(len(x), -1) @ params["dense"] + params["dense_bias"]
    return logits, (cols, conv, blocks, pooled)


def gradients(params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """Softmax cross-entropy gradients by hand (ties in a pooling window share the gradient)."""
    logits, (cols, conv, blocks, pooled) = forward(params, x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d_logits = (p - np.eye(CLASSES)[y]) / len(x)
    flat = pooled.reshape(len(x), -1)
    d_pooled = (d_logits @ params["dense"].T).reshape(pooled.shape)
    winners = blocks == pooled[:, :, :, None, :, None]
    d_hidden = (winners * d_pooled[:, :, :, None, :, None]).reshape(len(x), CHANNELS, 64).transpose(0, 2, 1)
    d_conv = d_hidden * (conv > 0)
    return {"dense": flat.T @ d_logits, "dense_bias": d_logits.sum(axis=0),
            "conv": np.einsum("npk,npc->kc", cols, d_conv), "conv_bias": d_conv.sum(axis=(0, 1))}


def owner_trains(x: np.ndarray, y: np.ndarray, epochs: int = 30, seed: int = 0) -> dict:
    """Adam on mini-batches of 32 (plaintext data only: NumPy's generator is fine here)."""
    rng = np.random.default_rng(seed)
    params = {"conv": rng.normal(0, np.sqrt(2 / 9), (9, CHANNELS)), "conv_bias": np.zeros(CHANNELS),
              "dense": rng.normal(0, np.sqrt(1 / 128), (128, CLASSES)), "dense_bias": np.zeros(CLASSES)}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            step += 1
            for name, g in gradients(params, x[batch], y[batch]).items():
                m, v = moments[name]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                params[name] -= 0.01 * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return params


def export_onnx(params: dict, path: str) -> None:
    """The trained network as an ONNX graph: Conv, Relu, MaxPool, Flatten, Gemm."""
    kernel = params["conv"].T.reshape(CHANNELS, 1, 3, 3)        # (out, in, kh, kw)
    initializers = {"kernel": kernel, "kernel_bias": params["conv_bias"], "weight": params["dense"],
                    "bias": params["dense_bias"]}
    nodes = [helper.make_node("Conv", ["image", "kernel", "kernel_bias"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"])]
    graph = helper.make_graph(
        nodes, "digits-cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


# ---- the private prediction ----------------------------------------------------------------------
def private_prediction(model: nn.Sequential, images: np.ndarray, output: str, protocol: str,
                       backend: str) -> tuple[np.ndarray, float, int, int]:
    """``model`` (the owner's) on ``images`` (the client's); only the client learns the result.
    Returns (the result, seconds, bytes sent by all parties, rounds)."""
    architecture = model.architecture()

    def program():
        private_model = (model if mp.party() == OWNER else architecture).private(OWNER)
        result = private_model.predict(mp.private(lambda: images, owner=CLIENT), output=output, to=CLIENT)
        return result, mp.stats()

    start = time.perf_counter()
    results = mp.run(program, parties=[OWNER, CLIENT], protocol=protocol, backend=backend, timeout=300)
    seconds = time.perf_counter() - start
    sent = sum(stats["bytes_sent"] for _, stats in results.values())
    return results[CLIENT][0], seconds, sent, max(stats["rounds"] for _, stats in results.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=450, help="how many test images the client sends")
    parser.add_argument("--backend", default="threads", choices=["threads", "processes"])
    args = parser.parse_args(argv)

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(images.reshape(-1, 1, 8, 8) / 16.0, labels,
                                                        test_size=0.25, stratify=labels, random_state=0)
    x_test, y_test = x_test[:args.images], y_test[:args.images]
    start = time.perf_counter()
    params = owner_trains(x_train, y_train)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "digits-cnn.onnx")
        export_onnx(params, path)
        model = nn.from_onnx(path)
    plain_class = model.predict_plain(x_test, "class")
    plain_logits = model.forward_plain(x_test)
    print(f"model owner: conv net trained in NumPy in {time.perf_counter() - start:.1f} s, exported to ONNX "
          f"and imported as\n  {model}\n  plaintext accuracy {np.mean(plain_class == y_test):.1%} on the "
          f"client's {len(x_test)} images")
    print(nn.calibrate(model, x_train))

    print(f"\n{'protocol':<10}{'output':<8}{'accuracy':>9}{'agrees':>8}{'max |err|':>11}{'time':>8}"
          f"{'MB sent':>9}{'rounds':>8}")
    for protocol in ("securenn", "pond"):
        for output in ("class", "logits"):
            result, seconds, sent, rounds = private_prediction(model, x_test, output, protocol, args.backend)
            predicted = result if output == "class" else result.argmax(axis=1)
            error = "" if output == "class" else f"{np.abs(result - plain_logits).max():.1e}"
            print(f"{protocol:<10}{output:<8}{np.mean(predicted == y_test):>9.1%}"
                  f"{np.mean(predicted == plain_class):>8.1%}{error:>11}{seconds:>7.2f}s{sent / 1e6:>9.2f}"
                  f"{rounds:>8}")
    print("\nagrees: the share of images classified as the owner's plaintext model does.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
