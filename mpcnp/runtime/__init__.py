"""The runtime (layer 4): who each party is, its channels and PRF keys, and launching parties.

context.py (a party's Context and Config) <- lifecycle.py (one party's life in a run) <- threads.py,
processes.py, cluster.py (three ways to start parties) <- launch.py (``run``).
"""
from mpcnp.runtime.context import (CORE_PARTIES, PRODUCER, SERVER0, SERVER1, SERVERS, Config, Context,
                                   PartyError, current, party, stats)
from mpcnp.runtime.launch import BACKENDS, run_parties

__all__ = ["CORE_PARTIES", "PRODUCER", "SERVER0", "SERVER1", "SERVERS", "Config", "Context",
           "PartyError", "current", "party", "stats", "BACKENDS", "run_parties"]
