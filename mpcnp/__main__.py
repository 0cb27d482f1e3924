"""Command line of mpcnp.

  python -m mpcnp                    the version and the ring kernels in use
  python -m mpcnp demo [--images N] [--backend threads|processes]
                                     private prediction: a model owner's network classifies a
                                     client's images; only the client sees the result
  python -m mpcnp party --config cluster.json --name NAME [--key KEYFILE] script.py [ARGS]
                                     run script.py as party NAME of a cluster (mp.run inside it
                                     runs only that party, over CurveZMQ to the cluster's hosts)
  python -m mpcnp cluster --out DIR NAME=HOST:PORT ... [--clients NAME ...]
                                     DIR/cluster.json and a key file DIR/NAME.key (mode 0600)
                                     for every party and client (mpcnp.runtime.clusterfile)
  python -m mpcnp keygen --out FILE  a Curve key pair, written to FILE with mode 0600 (the public
                                     key is printed; the secret key only ever goes to the file)
  python -m mpcnp costs [--markdown] the bytes and rounds of every protocol, beside SecureNN's

Errors in the command line, the cluster file, the keys or the run's channels are one line on
stderr naming what is wrong (exit status 2 before the script runs, 1 when its run failed).
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys


def _info(_args) -> int:
    import mpcnp
    from mpcnp import ring
    print(f"mpcnp {mpcnp.__version__}")
    print(f"ring kernels: {ring.BACKEND} ({ring.num_threads()} threads)")
    return 0


def _fail(command: str, problem) -> int:
    """One line on stderr naming the problem; the exit status for a problem found before running."""
    print(f"mpcnp {command}: {problem}", file=sys.stderr)
    return 2


def _party(args) -> int:
    from mpcnp.runtime import PartyError, cluster
    if not os.path.isfile(args.script):
        return _fail("party", f"no such script: {args.script}")
    try:
        cluster.bind(cluster.load_cluster(args.config), args.name, args.key)
    except (OSError, ValueError) as exc:
        return _fail("party", exc)
    sys.argv = [args.script, *args.args]
    try:
        runpy.run_path(args.script, run_name="__main__")
    except PartyError as exc:  # the run failed: say why in one line; the script's own bugs keep
        print(f"mpcnp party {args.name}: {exc}", file=sys.stderr)  # their tracebacks
        return 1
    finally:
        cluster.unbind()
    return 0


def _keygen(args) -> int:
    from mpcnp.net import write_key_file
    if not args.out:
        return _fail("keygen", "give --out FILE: the key pair is written to a file readable by you "
                               "only, never printed")
    try:
        public = write_key_file(args.out)
    except (OSError, ValueError) as exc:
        return _fail("keygen", exc)
    print(json.dumps({"public_key": public, "key_file": args.out}))
    return 0


def _cluster(args) -> int:
    from mpcnp.runtime.clusterfile import write_cluster
    parties = {}
    for item in args.parties:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            return _fail("cluster", f"expected NAME=HOST:PORT, got {item!r}")
        if name in parties:
            return _fail("cluster", f"{name} is given twice")
        parties[name] = address
    try:
        config = write_cluster(args.out, parties, tuple(args.clients or ()))
    except (OSError, ValueError) as exc:
        return _fail("cluster", exc)
    print(f"wrote {config} and key files for {', '.join([*parties, *(args.clients or ())])} in "
          f"{args.out}: copy cluster.json to every host, and NAME.key only to NAME's host")
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
    keygen = commands.add_parser("keygen", help="make a Curve key pair, in a key file")
    keygen.add_argument("--out", help="the key file to write (mode 0600; never overwritten); required")
    cluster = commands.add_parser("cluster", help="write a cluster file and every party's key file")
    cluster.add_argument("--out", required=True, help="the directory to write cluster.json and NAME.key to")
    cluster.add_argument("parties", nargs="+", metavar="NAME=HOST:PORT",
                         help="every party of the run (server0, server1, producer and any others)")
    cluster.add_argument("--clients", nargs="+", metavar="NAME", default=[],
                         help="clients (serving): a key file each, no address")
    costs = commands.add_parser("costs", help="the cost table of the protocols")
    costs.add_argument("--markdown", action="store_true", help="as the README's markdown table")
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        from mpcnp import demo
        return demo.main(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = {"party": _party, "keygen": _keygen, "cluster": _cluster, "costs": _costs}.get(args.command, _info)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
