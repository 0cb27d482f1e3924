"""Test configuration: hypothesis profiles and the fixtures every test module shares.

Profiles: "default" (derandomized, so every run draws the same examples and a failure reproduces),
"explore" (random examples, 200 per test) and "thorough" (random, 1000 per test); choose one with
MPCNP_HYPOTHESIS_PROFILE. No deadlines: the machines are shared and noisy.
"""
import os

import pytest
from helpers import NET_BACKENDS, network
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("default", derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=200, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("MPCNP_HYPOTHESIS_PROFILE", "default"))

BACKENDS = ["threads", pytest.param("processes", marks=pytest.mark.processes)]
PROTOCOLS = ["securenn", "pond"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn: the test body runs on threads and on processes."""
    return request.param


@pytest.fixture(params=PROTOCOLS)
def protocol(request) -> str:
    """Each protocol family in turn."""
    return request.param


@pytest.fixture(params=NET_BACKENDS)
def net(request):
    """{name: Transport} of a connected network on each transport in turn (memory, ipc, tcp+CURVE)."""
    with network(request.param) as transports:
        yield transports
