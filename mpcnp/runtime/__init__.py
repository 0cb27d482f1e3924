"""The runtime (layer 4): who each party is, its channels and PRF keys, and launching parties."""
from mpcnp.runtime.context import (CORE_PARTIES, PRODUCER, SERVER0, SERVER1, SERVERS, Config, Context,
                                   PartyError, current, party, stats)
from mpcnp.runtime.launch import run

__all__ = ["CORE_PARTIES", "PRODUCER", "SERVER0", "SERVER1", "SERVERS", "Config", "Context",
           "PartyError", "current", "party", "stats", "run"]
