"""The examples run as a newcomer runs them, and show what the Models issue asks of them: private
predictions equal the plaintext model's on every test image under securenn and on at least 99% under
pond (the digits MLP and CNN), and the joint prediction reaches only the doctor."""
import importlib.util
from pathlib import Path

import pytest

from mpcnp import demo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str], capsys) -> dict[tuple[str, str], list[str]]:
    """main(argv) of examples/<name>.py; its table as {(protocol, output): [accuracy, agrees, ...]}."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(argv) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        words = line.replace("pond, uncalibrated", "pond-uncalibrated").split()
        if words and words[0] in ("securenn", "pond", "pond-uncalibrated") and "%" in line:
            output = words[1] if words[1] in ("class", "logits") else "class"
            rows[(words[0], output)] = [w for w in words[1:] if w not in ("class", "logits")]
    return rows


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def test_private_prediction_digits_mlp(capsys):
    rows = run_example("private_prediction", [], capsys)
    assert percent(rows["securenn", "class"][1]) == percent(rows["securenn", "logits"][1]) == 1.0
    assert percent(rows["pond", "class"][1]) >= 0.99 and percent(rows["pond", "logits"][1]) >= 0.99
    assert percent(rows["pond-uncalibrated", "class"][1]) < 0.5    # why nn.calibrate exists


def test_private_cnn_digits_through_onnx(capsys):
    rows = run_example("private_cnn", [], capsys)
    assert percent(rows["securenn", "class"][1]) == percent(rows["securenn", "logits"][1]) == 1.0
    assert percent(rows["pond", "class"][1]) >= 0.99 and percent(rows["pond", "logits"][1]) >= 0.99


@pytest.mark.parametrize("backend", ["threads", pytest.param("processes", marks=pytest.mark.processes)])
def test_joint_prediction(backend, capsys):
    rows = run_example("joint_prediction", ["--backend", backend], capsys)
    assert percent(rows["securenn", "class"][1]) == 1.0 and percent(rows["pond", "class"][1]) >= 0.99


def test_demo_is_the_private_prediction_example(capsys):
    """`python -m mpcnp demo --images N` passes its options through (argparse once swallowed them)."""
    from mpcnp.__main__ import main
    assert main(["demo", "--images", "20"]) == 0
    assert "on the client's 20 images" in capsys.readouterr().out
    assert demo.EXAMPLE == EXAMPLES / "private_prediction.py"
    with pytest.raises(SystemExit):
        main(["keygen", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
