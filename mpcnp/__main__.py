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
  python -m mpcnp serve --config DIR/cluster.json --name server0|server1|producer [--key FILE]
                        [--store DIR] [options]
                                     run a core party as a service until SIGTERM or SIGINT
                                     (docs/serving.md)
  python -m mpcnp client --config DIR/cluster.json --name NAME [--key FILE] models | upload MODEL
                         FILE | predict MODEL X.npy [--output class] [--out Y.npy] | delete MODEL
                                     a client of a served model

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


def _serve(args) -> int:
    import logging
    import signal

    from mpcnp import ring
    from mpcnp.serving import config
    from mpcnp.serving.service import Service, Settings
    logging.basicConfig(level=args.log_level.upper(), format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    try:
        settings = Settings(protocol=args.family, frac_bits=args.frac_bits, truncation=args.truncation,
                            timeout=args.timeout,
                            batch_window=args.batch_window_ms / 1000, max_batch=args.max_batch,
                            batching=not args.no_batching, pool=not args.no_pool, pool_items=args.pool_items,
                            pool_mb=args.pool_mb)
        service = Service(config.load(args.config), args.name, args.key, args.store, settings)
    except (OSError, ValueError) as exc:
        print(f"mpcnp serve: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        ring.set_num_threads(args.threads)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    service.run()
    return 0


def _client(args) -> int:
    import numpy as np

    import mpcnp as mp
    try:
        with mp.Client(args.config, args.name, key=args.key, timeout=args.timeout) as client:
            if args.action == "models":
                for name in client.models():
                    print(json.dumps({"model": name, **client.model_info(name)}))
            elif args.action == "upload":
                client.upload(args.model, args.file)
                print(json.dumps({"uploaded": args.model}))
            elif args.action == "delete":
                client.delete(args.model)
                print(json.dumps({"deleted": args.model}))
            else:
                result = client.predict(args.model, np.load(args.file, allow_pickle=False), output=args.output)
                if args.out:
                    np.save(args.out, result)
                else:
                    print(json.dumps(result.tolist()))
    except (OSError, ValueError, mp.ServiceError) as exc:
        print(f"mpcnp client: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_serving(commands) -> None:
    serve = commands.add_parser("serve", help="run a core party as a model-serving service")
    serve.add_argument("--config", required=True, help="the cluster file (JSON) with its clients")
    serve.add_argument("--name", required=True, choices=["server0", "server1", "producer"])
    serve.add_argument("--key", help="this party's key file (else $MPCNP_SECRET_KEY or the cluster file's)")
    serve.add_argument("--store", help="where a server keeps its models (default ./mpcnp-store-NAME)")
    serve.add_argument("--protocol", dest="family", default="securenn", choices=["securenn", "pond"])
    serve.add_argument("--frac-bits", type=int, default=16)
    serve.add_argument("--truncation", choices=["local", "exact"], help="default: the protocol's")
    serve.add_argument("--timeout", type=float, default=5.0,
                       help="seconds without a word from a core party before the session is set up again")
    serve.add_argument("--batch-window-ms", type=float, default=2.0,
                       help="the longest server0 waits for other active clients' queries to join a batch")
    serve.add_argument("--max-batch", type=int, default=64, help="the most rows in a batch")
    serve.add_argument("--no-batching", action="store_true", help="one query per batch")
    serve.add_argument("--no-pool", action="store_true", help="deal all randomness online")
    serve.add_argument("--pool-items", type=int, default=4, help="items of preprocessing per model and batch size")
    serve.add_argument("--pool-mb", type=float, default=256.0, help="megabytes of preprocessing per party")
    serve.add_argument("--threads", type=int, help="threads of the ring kernels (default: all cores)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    client = commands.add_parser("client", help="a client of a served model")
    client.add_argument("--config", required=True, help="the cluster file (JSON)")
    client.add_argument("--name", required=True, help="this client's name in the cluster file")
    client.add_argument("--key", help="this client's key file (else $MPCNP_SECRET_KEY or the cluster file's)")
    client.add_argument("--timeout", type=float, default=30.0)
    actions = client.add_subparsers(dest="action", required=True)
    actions.add_parser("models", help="list the models served")
    upload = actions.add_parser("upload", help="share a model file (mpcnp.serving.spec.save) to the servers")
    upload.add_argument("model")
    upload.add_argument("file")
    delete = actions.add_parser("delete", help="delete one of this client's models")
    delete.add_argument("model")
    predict = actions.add_parser("predict", help="a private prediction on the samples of an .npy file")
    predict.add_argument("model")
    predict.add_argument("file", help="an .npy file: one sample or a batch")
    predict.add_argument("--output", default="logits", choices=["logits", "class"])
    predict.add_argument("--out", help="write the result to this .npy file (default: print it as JSON)")


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
    _add_serving(commands)
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        from mpcnp import demo
        return demo.main(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = {"party": _party, "keygen": _keygen, "costs": _costs, "cluster": _cluster, "serve": _serve,
               "client": _client}.get(args.command, _info)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
