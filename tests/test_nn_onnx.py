"""nn.from_onnx on graphs built here with onnx.helper: the imported model's plaintext forward equals
ONNX's reference evaluator, its private predictions equal that plaintext on every input under
securenn, and what it cannot import is refused with the node, its operator and what is supported."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from mpcnp import nn
from mpcnp.nn.onnx_import import SUPPORTED_OPS, OnnxImportError
from helpers import CLIENT, assert_within, error_bound, quantize, run_model, winning_gaps



def weights(*shape, scale=0.5, seed=0) -> np.ndarray:
    """Random float32 values on the 2^-16 grid (encoded exactly), the same for the same arguments."""
    rng = np.random.default_rng([seed, *shape, int(scale * 100)])
    return quantize(rng.normal(0, scale, shape)).astype(np.float32)


def build(nodes, input_shape, initializers: dict, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(_with_output_shape(model))   # the test graphs are valid ONNX
    return model


def _with_output_shape(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy the checker accepts: the output's shape (left open above) taken from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output[0].CopyFrom(inferred.graph.output[0])
    return copy


def mlp() -> onnx.ModelProto:
    """Gemm with transB (as PyTorch exports Linear), MatMul + Add, Sub / Div by constants, Relu, Tanh,
    Dropout, Identity, Softmax."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Gemm", ["b", "w1", "b1"], ["c"], transB=1, alpha=0.5),
             helper.make_node("Relu", ["c"], ["d"]), helper.make_node("Dropout", ["d"], ["e"]),
             helper.make_node("MatMul", ["e", "w2"], ["f"]), helper.make_node("Add", ["f", "b2"], ["g"]),
             helper.make_node("Tanh", ["g"], ["h"]), helper.make_node("Identity", ["h"], ["i"]),
             helper.make_node("Gemm", ["i", "w3"], ["j"]), helper.make_node("Softmax", ["j"], ["y"])]
    return build(nodes, [6], {"mean": weights(6), "std": np.float32(2.0), "w1": weights(8, 6), "b1": weights(8, seed=1),
                              "w2": weights(8, 7), "b2": weights(7, seed=2), "w3": weights(7, 4, scale=2.0)})


def cnn() -> onnx.ModelProto:
    """Conv (asymmetric pads, strides; SAME_UPPER), BatchNormalization, Relu, MaxPool, AveragePool,
    Mul by a per-channel constant, GlobalAveragePool, Reshape, Sigmoid, Flatten, Gemm."""
    nodes = [helper.make_node("Conv", ["x", "k1", "c1"], ["a"], pads=[1, 0, 0, 1], strides=[1, 1]),
             helper.make_node("BatchNormalization", ["a", "g", "beta", "mu", "var"], ["b"], epsilon=1e-3),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["d", "k2"], ["e"], auto_pad="SAME_UPPER", strides=[1, 2]),
             helper.make_node("Mul", ["e", "channel_scale"], ["f"]),
             helper.make_node("Sigmoid", ["f"], ["g2"]),
             helper.make_node("AveragePool", ["g2"], ["h"], kernel_shape=[1, 2], strides=[1, 1]),
             helper.make_node("Reshape", ["h", "shape"], ["i"]),
             helper.make_node("Reshape", ["i", "back"], ["j"]),
             helper.make_node("GlobalAveragePool", ["j"], ["k"]), helper.make_node("Flatten", ["k"], ["l"]),
             helper.make_node("Gemm", ["l", "w", "bias"], ["y"])]
    return build(nodes, [1, 7, 8], {
        "k1": weights(3, 1, 3, 2), "c1": weights(3), "g": weights(3, seed=1), "beta": weights(3, seed=2),
        "mu": weights(3, seed=3), "var": np.abs(weights(3, seed=4)) + 0.5, "k2": weights(4, 3, 2, 3),
        "channel_scale": weights(1, 4, 1, 1),
        "shape": np.array([0, -1], np.int64), "back": np.array([-1, 4, 3, 1], np.int64),
        "w": weights(4, 3, scale=4.0), "bias": weights(3)})


@pytest.mark.parametrize("make, shape", [(mlp, (6,)), (cnn, (1, 7, 8))], ids=["mlp", "cnn"])
def test_imported_model_matches_onnx_and_private_classes_match_plaintext(make, shape):
    proto = make()
    model = nn.from_onnx(proto)
    x = quantize(np.random.default_rng(1).normal(size=(30, *shape)))
    reference = ReferenceEvaluator(proto).run(None, {"x": x.astype(np.float32)})[0]
    np.testing.assert_allclose(model.forward_plain(x), reference, rtol=1e-4, atol=1e-5)   # float32 there
    logits_model = nn.Sequential(*model.plan("class"))
    assert winning_gaps(logits_model.forward_plain(x)).min() > 2 * error_bound(logits_model, x).max()
    np.testing.assert_array_equal(run_model(model, x, output="class")[CLIENT], model.predict_plain(x, "class"))


def test_imported_layers_fold_constants_next_to_linear_layers():
    kinds = [type(layer).__name__ for layer in nn.from_onnx(mlp()).layers]
    assert kinds == ["Affine", "Dense", "ReLU", "Dropout", "Dense", "Tanh", "Dense", "Softmax"]
    kinds = [type(layer).__name__ for layer in nn.from_onnx(cnn()).layers]
    assert kinds[:6] == ["Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "Conv2d", "Sigmoid"]


def test_private_logits_of_an_imported_cnn_within_the_bound():
    model = nn.from_onnx(cnn())
    x = quantize(np.random.default_rng(2).normal(size=(5, 1, 7, 8)))
    logits_model = nn.Sequential(*model.plan())
    assert_within(run_model(model, x)[CLIENT], model.forward_plain(x), error_bound(logits_model, x) + 1e-9)


def test_loads_paths_and_bytes(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    x = np.ones((2, 6))
    expected = nn.from_onnx(mlp()).forward_plain(x)
    np.testing.assert_array_equal(nn.from_onnx(str(path)).forward_plain(x), expected)
    np.testing.assert_array_equal(nn.from_onnx(path.read_bytes()).forward_plain(x), expected)
    with pytest.raises(TypeError, match="takes a path, bytes or an onnx.ModelProto"):
        nn.from_onnx(42)


def test_softmax_before_opset_13_on_the_last_axis():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["a"]), helper.make_node("Softmax", ["a"], ["y"], axis=1)]
    model = nn.from_onnx(build(nodes, [3], {"w": weights(3, 4)}, opset=11))
    assert model[-1].axis == -1


def one_node(op, inputs=("x",), initializers=None, input_shape=(1, 4, 4), **attributes) -> onnx.ModelProto:
    node = helper.make_node(op, list(inputs), ["y"], name="the_node", **attributes)
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("proto, message", [
    (one_node("LeakyRelu"), r"'the_node' \(LeakyRelu\): operator not supported; supported: Gemm, MatMul"),
    (one_node("Conv", ("x", "k"), {"k": weights(2, 1, 3, 3)}, group=1, dilations=[2, 2]),
     r"'the_node' \(Conv\): attribute dilations=\[2, 2\] is not supported \(only \[1, 1\]\)"),
    (one_node("Conv", ("x", "k"), {"k": weights(2, 1, 3, 3)}, auto_pad="SAME_LOWER"),
     r"\(Conv\): attribute auto_pad='SAME_LOWER' is not supported \(NOTSET, VALID or SAME_UPPER\)"),
    (one_node("MaxPool", kernel_shape=[2, 2], pads=[1, 1, 1, 1]), r"\(MaxPool\): attribute pads=.* \(no padding\)"),
    (one_node("MaxPool", kernel_shape=[2, 2], ceil_mode=1), r"\(MaxPool\): attribute ceil_mode=1"),
    (one_node("Gemm", ("x", "w"), {"w": weights(4, 2)}, input_shape=(4,), transA=1), r"\(Gemm\): attribute transA=1"),
    (one_node("Relu", alpha=1.0), r"\(Relu\): attribute alpha is not supported \(supported: none\)"),
    (one_node("Add", ("x", "x")), r"\(Add\): its computed inputs are \['x', 'x'\], but only a chain"),
    (one_node("Reshape", ("x", "s"), {"s": np.array([1, -1], np.int64)}), r"fixes the batch size"),
    (one_node("MatMul", ("w", "x"), {"w": weights(2, 1)}), r"the computed input must be the left operand"),
    (one_node("Div", ("c", "x"), {"c": weights(1)}), r"division by a computed value"),
    (one_node("Softmax", axis=1, input_shape=(3, 2)), None),
])
def test_unsupported_graphs_are_refused_naming_node_operator_and_what_is_supported(proto, message):
    if message is None:
        assert isinstance(nn.from_onnx(proto)[-1], nn.Softmax)   # opset 17: any axis is fine
        return
    with pytest.raises(OnnxImportError, match=message):
        nn.from_onnx(proto)


def test_every_supported_operator_is_listed():
    assert set(SUPPORTED_OPS) == {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "Sigmoid", "Tanh",
                                  "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten",
                                  "Reshape", "Softmax", "Identity", "Dropout"}


def test_a_skip_connection_is_refused():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Add", ["a", "b"], ["y"], name="skip")]
    with pytest.raises(OnnxImportError, match=r"'skip' \(Add\): its computed inputs are \['a', 'b'\]"):
        nn.from_onnx(build(nodes, [3], {}))
