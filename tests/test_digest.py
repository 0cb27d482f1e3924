"""One program everywhere: the start-up settings check (mpcnp.runtime.settings) and the running
program digest (mpcnp.digest). Parties that disagree fail with a PartyError naming the setting, or
saying the programs differ with the first differing operation, before anything is revealed; parties
that agree pay one small message per check."""
from __future__ import annotations

import numpy as np
import pytest

import mpcnp as mp
from mpcnp import digest
from mpcnp.runtime import settings
from mpcnp.runtime.context import Config, current
from mpcnp.runtime.threads import run_threads


# ---- settings at start-up --------------------------------------------------------------------------
def run_with_configs(configs: dict, fn=lambda: mp.party()):
    """Run ``fn`` on the threads backend with a Config per party, as hosts of a cluster would, each
    from its own mp.run arguments."""
    parties = ("server0", "server1", "producer")
    original = settings.settings_of

    def per_party(ctx):
        ctx.config = configs[ctx.name]
        return original(ctx)

    return parties, per_party


@pytest.mark.parametrize("field, odd_value, words", [
    ("frac_bits", 20, "frac_bits differs (16 on server0, producer; 20 on server1)"),
    ("protocol", "pond", "protocol differs ('securenn' on server0, producer; 'pond' on server1)"),
    ("truncation", "local", "truncation differs"),
    ("validate", True, "validate differs"),
])
def test_a_setting_that_differs_is_named_and_the_odd_party_blamed(monkeypatch, field, odd_value, words):
    base = Config(protocol="securenn", frac_bits=16, truncation="exact")
    odd = Config(**{**base.__dict__, field: odd_value})
    configs = {"server0": base, "server1": odd, "producer": base}
    _, per_party = run_with_configs(configs)
    monkeypatch.setattr(settings, "settings_of", per_party)
    with pytest.raises(mp.PartyError) as info:
        run_threads(lambda: mp.party(), (), {}, ("server0", "server1", "producer"), base)
    assert info.value.party == "server1"
    assert words in str(info.value) and "the parties run with different settings" in str(info.value)


def test_a_different_version_is_named(monkeypatch):
    versions = {"server0": "0.1.0", "server1": "0.1.0", "producer": "0.2.0"}
    original = settings.settings_of
    monkeypatch.setattr(settings, "settings_of", lambda ctx: {**original(ctx), "version": versions[ctx.name]})
    expected = r"version differs \('0.1.0' on server0, server1; '0.2.0' on producer\)"
    with pytest.raises(mp.PartyError, match=expected) as info:
        mp.run(lambda: None)
    assert info.value.party == "producer"


def test_timeouts_may_differ_and_agreeing_settings_cost_nothing_counted():
    def fn():
        return mp.stats()["messages_sent"]

    assert set(mp.run(fn, frac_bits=20, parties=["alice"]).values()) == {0}   # before the counters start


def test_the_settings_include_every_shared_config_field():
    got = mp.run(lambda: settings.settings_of(current()), frac_bits=12, protocol="pond")["server0"]
    assert got == {"version": settings.package_version(), "parties": ["server0", "server1", "producer"],
                   "protocol": "pond", "frac_bits": 12, "truncation": "local", "validate": False}


# ---- the program digest --------------------------------------------------------------------------
def test_a_public_value_that_differs_is_caught_before_the_reveal():
    revealed = []

    def fn():
        x = mp.private(lambda: np.arange(3.0), owner="server0")
        scale = 3.0 if mp.party() == "producer" else 2.0      # a public value that is not public
        y = x * scale
        z = y + 1
        revealed.append(mp.party())
        return z.reveal()

    with pytest.raises(mp.PartyError) as info:
        mp.run(fn)
    message = str(info.value)
    assert "the parties ran different programs" in message and "Nothing was revealed" in message
    assert "operation 2 of the run" in message and "mul(private(3,), 2.0)" in message
    assert "mul(private(3,), 3.0)" in message and f"{__file__}:" in message
    assert info.value.party == "producer"


def test_iterating_a_set_in_different_orders_is_caught():
    """What hosts with different hash seeds do: the same operations in another order."""
    def fn():
        x = mp.private(lambda: np.ones(4), owner="server0")
        order = [1, 2] if mp.party() != "server1" else [2, 1]
        for k in order:
            x = x * float(k)
        return x.reveal()

    expected = r"first differ at operation 2 of the run: server0, producer ran mul\(private\(4,\), 1.0\)"
    with pytest.raises(mp.PartyError, match=expected) as info:
        mp.run(fn)
    assert info.value.party == "server1"


def test_a_branch_on_the_party_that_changes_the_message_pattern_fails_clearly():
    """server1 skips a product: its next message is the digest where the others send triples'
    openings; the mismatch of message kinds says the programs diverged."""
    def fn():
        x = mp.private(lambda: np.ones(3), owner="server0")
        if mp.party() != "server1":
            x = x * x
        return x.reveal()

    with pytest.raises(mp.PartyError, match="diverged|different programs"):
        mp.run(fn, timeout=10)


def test_agreeing_programs_pay_one_message_per_party_pair_per_reveal():
    def fn():
        x = mp.private(lambda: np.ones(3), owner="server0")
        y = x * x + 1
        before = mp.stats()
        y.reveal(to="server1")
        after = mp.stats()
        return after["messages_sent"] - before["messages_sent"], after["bytes_sent"] - before["bytes_sent"]

    results = mp.run(fn, parties=["alice"])
    # every party sends its digest to the three others; the servers also send their shares
    assert results["alice"] == (3, 3 * digest.MESSAGE_BYTES)
    assert results["producer"] == (3, 3 * digest.MESSAGE_BYTES)


def test_long_runs_without_reveals_check_every_so_often(monkeypatch):
    monkeypatch.setattr(digest, "CHECK_EVERY", 5)

    def fn():
        x = mp.private(lambda: np.ones(2), owner="server0")
        before = mp.stats()["messages_sent"]
        for _ in range(12):
            x = x + 1.0
        return mp.stats()["messages_sent"] - before

    assert mp.run(fn)["producer"] == 2 * 2   # two checks (after 5 and 10 operations) to two peers


@pytest.mark.processes
def test_divergence_is_caught_on_the_processes_backend():
    def fn():
        x = mp.private(lambda: np.ones(2), owner="server0")
        x = x + (1.0 if mp.party() == "server0" else 2.0)
        return x.reveal()

    with pytest.raises(mp.PartyError, match="different programs") as info:
        mp.run(fn, backend="processes", timeout=10)
    assert info.value.party == "server0"


def test_descriptions_do_not_depend_on_the_process():
    describe = digest.describe_operand
    assert describe(lambda: 1) == "function" and describe(object()) == "object"
    assert describe((1, 2.5, None, slice(1, None))) == "(1, 2.5, None, 1:None:None)"
    assert describe(np.arange(3.0)) == describe(np.arange(3.0)) != describe(np.arange(3.0) + 1)
