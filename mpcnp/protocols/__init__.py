"""Protocols over shares (layer 5): sharing and reveal, Pond's linear algebra, SecureNN's comparisons.

Every function here runs on every party (SPMD) and takes the party's runtime context explicitly.
Shares are uint64 arrays on server0 and server1 and ``None`` on every other party.
"""
