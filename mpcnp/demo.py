"""``python -m mpcnp demo``: the private-prediction example, ``examples/private_prediction.py``.

A model owner's scikit-learn MLP classifies a client's digit images, neither seeing the other's
data, under SecureNN and Pond, each compared with the plaintext model. The example lives in the
source tree's ``examples/`` (it needs the optional scikit-learn: ``pip install "mpcnp[ml]"``); this
command runs that file's ``main`` with the same options (``--images N``, ``--backend
threads|processes``).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "private_prediction.py"


def main(argv: list[str] | None = None) -> int:
    if not EXAMPLE.exists():
        print(f"python -m mpcnp demo runs {EXAMPLE.name} from a source checkout of mpcnp (its examples/ "
              f"directory); none found at {EXAMPLE.parent}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("mpcnp_private_prediction_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(example)
    except ImportError as exc:
        print(f"the demo needs scikit-learn: pip install \"mpcnp[ml]\" ({exc})", file=sys.stderr)
        return 2
    return example.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
