"""Command line: ``python -m mpcnp`` (version and kernels), ``party`` (one party of a cluster), ``keygen``."""
from __future__ import annotations

import argparse
import sys


def _info(_args) -> int:
    import mpcnp
    from mpcnp import ring
    print(f"mpcnp {mpcnp.__version__}")
    print(f"ring kernels: {ring.BACKEND} ({ring.num_threads()} threads)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpcnp", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("info", help="print the version and the ring kernels in use (the default)")
    args = parser.parse_args(argv)
    return _info(args)


if __name__ == "__main__":
    sys.exit(main())
