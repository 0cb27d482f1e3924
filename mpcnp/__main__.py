"""Command line of mpcnp.

  python -m mpcnp                    the version and the ring kernels in use
  python -m mpcnp demo [--images N] [--backend threads|processes]
                                     private prediction: a model owner's network classifies a
                                     client's images; only the client sees the result
  python -m mpcnp party --config cluster.json --name NAME [--key KEYFILE] script.py [ARGS]
                                     run script.py as party NAME of a cluster (mp.run inside it
                                     runs only that party, over CurveZMQ to the cluster's hosts)
  python -m mpcnp keygen [--out FILE] a Curve key pair for a cluster (printed, or written to FILE
                                     with mode 0600 and the public key printed)
  python -m mpcnp costs [--markdown] the bytes and rounds of every protocol, beside SecureNN's
"""
from __future__ import annotations

import argparse
import json
import runpy
import sys


def _info(_args) -> int:
    import mpcnp
    from mpcnp import ring
    print(f"mpcnp {mpcnp.__version__}")
    print(f"ring kernels: {ring.BACKEND} ({ring.num_threads()} threads)")
    return 0


def _party(args) -> int:
    from mpcnp.runtime import cluster
    try:
        cluster.bind(cluster.load_cluster(args.config), args.name, args.key)
    except (OSError, ValueError) as exc:
        print(f"mpcnp party: {exc}", file=sys.stderr)
        return 2
    sys.argv = [args.script, *args.args]
    try:
        runpy.run_path(args.script, run_name="__main__")
    finally:
        cluster.unbind()
    return 0


def _keygen(args) -> int:
    from mpcnp.net import keygen, write_key_file
    if args.out:
        public = write_key_file(args.out)
        print(json.dumps({"public_key": public, "key_file": args.out}))
    else:
        public, secret = keygen()
        print(json.dumps({"public_key": public, "secret_key": secret}))
    return 0


def _costs(args) -> int:
    from mpcnp.protocols import costs
    if args.markdown:
        print(costs.markdown())
        return 0
    rows = [("operation", "mpcnp (bytes summed over parties, rounds)", "SecureNN (PETS Tables 1-2)")]
    rows += costs.table()
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("\nn: elements; matmul m x n by n x v; conv2d x, w, z: input, kernel, output elements "
          "(PETS: output m x m, f x f filter, i in, o out channels)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpcnp", description="mpcnp: secure computation on NumPy")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("info", help="the version and the ring kernels in use (the default)")
    # the demo parses its own options (--help included): they reach it as the unknown arguments
    commands.add_parser("demo", help="private prediction on the in-process default", add_help=False)
    party = commands.add_parser("party", help="run a script as one party of a cluster")
    party.add_argument("--config", required=True, help="the cluster file (JSON)")
    party.add_argument("--name", required=True, help="which party of the cluster file this process is")
    party.add_argument("--key", help="this party's key file (see keygen); else $MPCNP_SECRET_KEY or the "
                                     "cluster file's secret_key_file")
    party.add_argument("script", help="the Python script to run")
    party.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    keygen = commands.add_parser("keygen", help="make a Curve key pair")
    keygen.add_argument("--out", help="write the pair to this key file (mode 0600)")
    costs = commands.add_parser("costs", help="the cost table of the protocols")
    costs.add_argument("--markdown", action="store_true", help="as the README's markdown table")
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        from mpcnp import demo
        return demo.main(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = {"party": _party, "keygen": _keygen, "costs": _costs}.get(args.command, _info)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
