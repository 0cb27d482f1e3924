"""mpcnp.nn: private forward passes against the same architecture on NumPy, and the demo."""
import numpy as np
import pytest

import mpcnp as mp
from mpcnp import demo, nn


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 2, 3, stride=2), nn.ReLU(), nn.AvgPool2d(1), nn.Flatten(),
                         nn.Dense(2 * 1 * 1, 4))


def random_params(model: nn.Sequential, rng) -> list[dict]:
    return [{name: rng.normal(scale=0.5, size=shape) for name, shape in layer.shapes.items()}
            if layer.params else {} for layer in model.layers]


@pytest.mark.parametrize("backend", ["threads", pytest.param("processes", marks=pytest.mark.processes)])
def test_private_cnn_matches_plaintext(backend):
    rng = np.random.default_rng(0)
    params = random_params(small_cnn(), rng)
    images = rng.normal(size=(3, 1, 6, 6))

    def program():
        model = small_cnn()
        if mp.party() == "owner":
            model.load(params)
        return model.private(owner="owner")(mp.private(lambda: images, owner="client")).reveal(to="client")

    result = mp.run(program, parties=["owner", "client"], backend=backend)["client"]
    expected = small_cnn().load(params).forward_plain(images)
    # each layer adds at most a unit of truncation error, scaled by the next layers' weights (|w| ~ 0.5,
    # fan-in <= 27): a budget of 2^-16 * 100 covers the whole chain
    np.testing.assert_allclose(result, expected, rtol=0, atol=100 * 2.0 ** -16)


def test_load_checks_names_and_shapes():
    with pytest.raises(ValueError, match="expected shape"):
        nn.Dense(3, 2).load({"weight": np.zeros((2, 3))})
    with pytest.raises(KeyError, match="no parameter"):
        nn.Dense(3, 2).load({"kernel": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="parameters for 2 layers"):
        nn.Sequential(nn.Dense(3, 2), nn.ReLU()).load([{}])


def test_owner_without_values_is_told_to_load():
    def program():
        return nn.Dense(2, 2).private(owner="owner")(mp.private(np.ones((1, 2)))).reveal()

    with pytest.raises(mp.PartyError, match="call load"):
        mp.run(program, parties=["owner"], timeout=10)


def test_demo_runs_and_agrees_with_plaintext(capsys):
    assert demo.main(["--images", "20"]) == 0
    out = capsys.readouterr().out
    rows = {}  # label -> accuracy, agreement, max logit error
    for line in out.splitlines():
        words = line.split()
        if line.startswith("securenn"):
            rows["securenn"] = words[1:4]
        elif line.startswith("pond B="):
            rows[" ".join(words[:2])] = words[2:5]
    assert rows["securenn"][1] == "100.0%"   # exact ReLU: every prediction agrees with the plaintext model
    # Pond with a ReLU interval the model owner sized on its training data: every ReLU within
    # 0.0044 B of exact, and the network's logits within 2 of the plaintext ones
    fitted = [row for label, row in rows.items() if label not in ("securenn", "pond B=8")]
    assert len(fitted) == 1 and fitted[0][1] == "100.0%" and float(fitted[0][2]) < 2.0


def test_demo_command_passes_its_options_through(capsys):
    """`python -m mpcnp demo --images N` as the usage line says (argparse once swallowed them)."""
    from mpcnp.__main__ import main
    assert main(["demo", "--images", "3"]) == 0
    assert "on 3 client images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["keygen", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
