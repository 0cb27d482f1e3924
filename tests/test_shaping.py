"""The shaping transport (mpcnp/net/shaping.py): when messages arrive, on a virtual clock, and that
shaping changes no count, no stamp and no result, on both backends.

Arrival times are checked on a virtual clock shared by the transports (``sleep`` advances it), so
nothing here depends on how fast the machine is.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, strategies as st

import mpcnp as mp
from mpcnp.net import MemoryNetwork, PeerTimeout
from mpcnp.net.errors import NetError
from mpcnp.net.shaping import (PROFILES, STAMP_BITS, NetworkProfile, ShapedTransport, network_profile,
                               pack_stamp, unpack_stamp)
from mpcnp.runtime.context import current

BACKENDS = ["threads", pytest.param("processes", marks=pytest.mark.processes)]


class VirtualClock:
    def __init__(self, start: float = 1.7e9) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def shaped_network(profile, names=("a", "b", "c")):
    clock = VirtualClock()
    network = MemoryNetwork(names)
    return clock, {n: ShapedTransport(network.transport(n), profile, clock=clock, sleep=clock.sleep)
                   for n in names}


SLOW = NetworkProfile("slow", 1000.0, 0.5)  # 1 kB/s, half a second: round numbers to check against


def test_a_message_arrives_after_latency_plus_its_bytes_over_bandwidth():
    clock, t = shaped_network(SLOW)
    start = clock.now
    t["a"].send("b", np.zeros(100, np.uint8))          # 100 payload + 24 header bytes
    t["b"].recv("a", timeout=None)
    assert clock.now - start == pytest.approx(124 / 1000 + 0.5, abs=1e-6)


def test_a_link_serialises_one_message_after_the_other_and_links_are_independent():
    clock, t = shaped_network(SLOW)
    start = clock.now
    t["a"].send("b", np.zeros(100, np.uint8))
    t["a"].send("b", np.zeros(100, np.uint8))          # waits for the first to leave the link
    t["a"].send("c", np.zeros(100, np.uint8))          # another link: not delayed by a -> b
    t["c"].recv("a", timeout=None)
    assert clock.now - start == pytest.approx(0.124 + 0.5, abs=1e-6)
    t["b"].recv("a", timeout=None)
    assert clock.now - start == pytest.approx(0.124 + 0.5, abs=1e-6)
    t["b"].recv("a", timeout=None)
    assert clock.now - start == pytest.approx(2 * 0.124 + 0.5, abs=1e-6)


def test_a_message_that_arrived_while_the_receiver_computed_is_not_delayed():
    clock, t = shaped_network(SLOW)
    t["a"].send("b", np.zeros(100, np.uint8))
    clock.now += 10.0                                   # the receiver was busy for 10 s
    before = clock.now
    t["b"].recv("a", timeout=None)
    assert clock.now == before


def test_a_message_not_due_within_the_timeout_times_out_and_is_kept():
    clock, t = shaped_network(NetworkProfile("far", math.inf, 3600.0))
    t["a"].send("b", np.arange(3, dtype=np.int64))
    with pytest.raises(PeerTimeout):
        t["b"].recv("a", timeout=0.01)
    clock.now += 3600.0
    np.testing.assert_array_equal(t["b"].recv("a", timeout=0.01), [0, 1, 2])


SHAPES = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=6)


@given(SHAPES)
def test_counts_stamps_and_payloads_are_those_of_the_unshaped_transport(shapes):
    arrays = [np.arange(int(np.prod(s)), dtype=np.float64).reshape(s) for s in shapes]

    def exchange(transports):
        got = []
        for i, array in enumerate(arrays):      # a ping-pong: the Lamport clocks climb
            sender, receiver = ("a", "b") if i % 2 == 0 else ("b", "a")
            transports[sender].send(receiver, array)
            got.append(transports[receiver].recv(sender, timeout=None))
        transports["a"].send_json("b", {"done": len(arrays)})
        got.append(transports["b"].recv_json("a", timeout=None))
        return got, {n: t.stats.as_dict() for n, t in transports.items()}

    plain_network = MemoryNetwork(["a", "b"])
    plain = exchange({n: plain_network.transport(n) for n in ("a", "b")})
    shaped = exchange(shaped_network(PROFILES["lan"], ("a", "b"))[1])
    assert shaped[1] == plain[1]
    for mine, theirs in zip(shaped[0][:-1], plain[0][:-1]):
        np.testing.assert_array_equal(mine, theirs)
    assert shaped[0][-1] == plain[0][-1]


@given(st.integers(0, (1 << STAMP_BITS) - 1), st.floats(0, 4e9), st.floats(-1e5, 1e5))
def test_a_packed_stamp_restores_the_lamport_stamp_and_the_arrival_time(stamp, arrival, skew):
    # the receiver's clock may be days before or after the arrival: the modulus is 12.7 days
    restored_stamp, restored_arrival = unpack_stamp(pack_stamp(stamp, arrival), arrival + skew)
    assert restored_stamp == stamp
    assert restored_arrival == pytest.approx(arrival, abs=2e-6)


def test_a_stamp_beyond_the_emulation_limit_is_refused():
    with pytest.raises(NetError, match="at most 16777215 rounds"):
        pack_stamp(1 << STAMP_BITS, time.time())


@pytest.mark.parametrize("spec,bandwidth,latency", [
    ("lan", 625e6, 0.22e-3), ("wan", 40e6, 58e-3), ("metro:100MB/s:5ms", 100e6, 5e-3),
    ("dc:10Gbit/s:50us", 1.25e9, 50e-6), ("x:inf:0", math.inf, 0.0), ("y:2e6:0.25", 2e6, 0.25)])
def test_profiles_by_name_and_custom(spec, bandwidth, latency):
    profile = network_profile(spec)
    assert (profile.bandwidth, profile.latency) == pytest.approx((bandwidth, latency))


@pytest.mark.parametrize("spec,message", [
    ("moon", "unknown network 'moon'"), ("a:1furlong/s:1s", "bandwidth unit"),
    ("a:0:1ms", "bandwidth must be a positive"), ("a:1MB/s:-1ms", "latency must be a finite"),
    ("a:1MB/s:1e400", "latency must be a finite")])
def test_bad_profiles_are_refused_naming_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        network_profile(spec)


def relu_program():
    ctx = current()
    x = mp.private(lambda: np.linspace(-3, 3, 50), owner="server0")
    y = mp.relu(x) @ np.ones((50, 2))
    return type(ctx.transport).__name__, mp.stats(), y.reveal()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mp_run_on_an_emulated_network_counts_and_computes_as_without(backend):
    plain = mp.run(relu_program, backend=backend)
    lan = mp.run(relu_program, backend=backend, network="dc:10Gbit/s:50us")
    for party in plain:
        assert lan[party][0] == "ShapedTransport" and plain[party][0] != "ShapedTransport"
        assert lan[party][1] == plain[party][1]
        np.testing.assert_array_equal(lan[party][2], plain[party][2])
    expected = np.maximum(np.linspace(-3, 3, 50), 0).sum() * np.ones(2)
    np.testing.assert_allclose(lan["server0"][2], expected, atol=50 * 2.0 ** -16)


def test_a_failure_under_emulation_names_the_party():
    def program():
        if mp.party() == "server1":
            raise RuntimeError("boom")
        return mp.private(lambda: np.ones(3), owner="server0").reveal()

    with pytest.raises(mp.PartyError, match="server1") as info:
        mp.run(program, network="wan", timeout=10)
    assert info.value.party == "server1"


def test_an_unknown_network_is_refused_before_the_run():
    with pytest.raises(ValueError, match="unknown network 'moon'"):
        mp.run(lambda: None, network="moon")


# ---- sender-side hold (a delivery thread; used where the medium shapes bandwidth itself) -------------
class Recording(MemoryNetwork):
    """A memory network whose transports note when each message reaches the medium."""

    def __init__(self, names, clock):
        super().__init__(names)
        self.delivered = []
        for transport in self._transports.values():
            deliver = transport._deliver
            transport._deliver = (lambda to, kind, stamp, wire, deliver=deliver:
                                  (self.delivered.append((clock(), to, int(wire[0]))), deliver(to, kind, stamp, wire)))


def test_a_sender_side_hold_releases_each_message_at_its_arrival_time_in_link_order():
    clock = time.monotonic
    network = Recording(["a", "b", "c"], clock)
    profile = NetworkProfile("held", 1e6, 0.02, hold="sender")
    a, b, c = (ShapedTransport(network.transport(n), profile, clock=clock) for n in "abc")
    sent = []
    for i in range(6):
        sent.append(clock())
        a.send("b" if i % 2 else "c", np.full(1000 * (i + 1), i, np.uint8))
    a.drain()
    assert [v for _, to, v in network.delivered if to == "b"] == [1, 3, 5]
    assert [v for _, to, v in network.delivered if to == "c"] == [0, 2, 4]
    free = {"b": 0.0, "c": 0.0}
    for (when, to, i), started in zip(sorted(network.delivered, key=lambda d: d[2]), sent):
        free[to] = max(started, free[to]) + (1000 * (i + 1) + 24) / 1e6   # the link serialises
        assert when >= free[to] + 0.02
    assert [int(b.recv("a", 1)[0]) for _ in range(3)] == [1, 3, 5]
    assert [int(c.recv("a", 1)[0]) for _ in range(3)] == [0, 2, 4]
    assert a.stats.bytes_sent == sum(1000 * (i + 1) + 24 for i in range(6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mp_run_with_a_sender_side_hold_counts_and_computes_as_without(backend):
    plain = mp.run(relu_program, backend=backend)
    held = mp.run(relu_program, backend=backend, network=NetworkProfile("held", math.inf, 1e-4, hold="sender"))
    for party in plain:
        assert held[party][1] == plain[party][1]
        np.testing.assert_array_equal(held[party][2], plain[party][2])


def test_a_failure_under_a_sender_side_hold_names_the_party():
    def program():
        if mp.party() == "producer":
            raise RuntimeError("boom")
        return mp.private(lambda: np.ones(3), owner="server0").reveal()

    with pytest.raises(mp.PartyError, match="producer"):
        mp.run(program, network=NetworkProfile("held", math.inf, 0.05, hold="sender"), timeout=10)
