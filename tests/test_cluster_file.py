"""Key files (mpcnp.net.keys) and the cluster file (mpcnp.runtime.cluster): valid files load, bad ones
are refused with the reason, and transports come up from a cluster file."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from mpcnp.net import (CurveConfig, keygen, read_key_file,
                       write_key_file)
from mpcnp.runtime.cluster import load_cluster, parse_cluster
from helpers import NAMES, WAIT


# ---- cluster file and keys -------------------------------------------------------------------
def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_key_files(tmp_path):
    public = write_key_file(tmp_path / "k.json")
    assert oct(os.stat(tmp_path / "k.json").st_mode & 0o777) == "0o600"
    assert read_key_file(tmp_path / "k.json")[0] == public
    with pytest.raises(FileExistsError):
        write_key_file(tmp_path / "k.json")
    with pytest.raises(ValueError, match="does not belong"):
        write_key_file(tmp_path / "other.json", keygen()[0], keygen()[1])
    public, secret = keygen()
    assert secret not in repr(CurveConfig(public, secret, {"server1": keygen()[0]}))
    with pytest.raises(ValueError, match="does not belong"):
        CurveConfig(keygen()[0], secret)


def test_cluster_file_with_keys(tmp_path, monkeypatch):
    keys = {n: keygen() for n in NAMES}
    write_key_file(tmp_path / "s1.key", *keys["server1"])
    entries = {n: {"address": f"127.0.0.1:{4000 + i}", "public_key": keys[n][0]}
               for i, n in enumerate(NAMES)}
    entries["server1"]["secret_key_file"] = "s1.key"
    entries["client"] = {"address": "[::1]:4100", "public_key": keygen()[0]}
    cluster = load_cluster(write_json(tmp_path / "cluster.json", entries))
    assert cluster.names == (*NAMES, "client")
    assert cluster.endpoints()["client"] == "tcp://[::1]:4100"
    assert cluster.curve_config("server1").public_key == keys["server1"][0]
    monkeypatch.setenv("MPCNP_SECRET_KEY", keys["server0"][1])
    assert cluster.curve_config("server0").peer_keys["server1"] == keys["server1"][0]
    with pytest.raises(ValueError, match="does not match the public_key of producer"):
        cluster.curve_config("producer")
    monkeypatch.delenv("MPCNP_SECRET_KEY")
    with pytest.raises(ValueError, match="no secret key for producer"):
        cluster.curve_config("producer")
    insecure = parse_cluster({"server0": "h:1", "server1": "h:2", "producer": "h:3", "insecure": True})
    assert insecure.insecure and insecure.curve_config("server0") is None


PLAIN = {"server0": "h:1", "server1": "h:2", "producer": "h:3", "insecure": True}
KEYS = {n: keygen()[0] for n in NAMES}
KEYED = {n: {"address": PLAIN[n], "public_key": KEYS[n]} for n in NAMES}
BAD_CLUSTERS = {
    "plain tcp": (dict(PLAIN, insecure=False), "insecure"),
    "unknown field": (dict(KEYED, server0={"address": "h:1", "adress": "x"}), "unknown field 'adress'"),
    "bad address": (dict(PLAIN, server0="h"), "bad address"),
    "bad port": (dict(PLAIN, server0="h:70000"), "out of range"),
    "missing core": ({"server0": "h:1", "server1": "h:2", "insecure": True}, "core party producer"),
    "same address": (dict(PLAIN, server1="h:1"), "same address"),
    "bad name": (dict(PLAIN, **{"": "h:4"}), "non-empty"),
    "insecure not bool": (dict(PLAIN, insecure="yes"), "true or false"),
    "not an object": ([1, 2], "JSON object"),
    "some keys only": (dict(KEYED, producer="h:3"), "producer has no public_key"),
    "shared key": (dict(KEYED, producer={"address": "h:3", "public_key": KEYS["server0"]}),
                   "same public_key"),
    "bad key": (dict(KEYED, producer={"address": "h:3", "public_key": "not-a-key"}), "Z85"),
}


@pytest.mark.parametrize("case", BAD_CLUSTERS)
def test_bad_cluster_files_are_rejected_with_the_reason(case):
    obj, message = BAD_CLUSTERS[case]
    with pytest.raises(ValueError, match=message):
        parse_cluster(obj)


@pytest.mark.parametrize("text, message", [('{"server0": "h:1", "server0": "h:2"}', "appears twice"),
                                           ('{"server0": ', "not valid JSON")])
def test_bad_cluster_json(tmp_path, text, message):
    (tmp_path / "cluster.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_cluster(tmp_path / "cluster.json")


def test_transports_from_a_cluster_file(tmp_path):
    keys = {n: keygen() for n in NAMES}
    ports = []
    for n in NAMES:
        write_key_file(tmp_path / f"{n}.key", *keys[n])
        with socket.socket() as probe:  # a free port (the race with other programs is harmless)
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    entries = {n: {"address": f"127.0.0.1:{port}", "public_key": keys[n][0],
                   "secret_key_file": f"{n}.key", "bind": f"tcp://127.0.0.1:{port}"}
               for n, port in zip(NAMES, ports)}
    cluster = load_cluster(write_json(tmp_path / "cluster.json", entries))
    transports = {n: cluster.transport(n) for n in NAMES}
    try:
        for t in transports.values():
            t.wait_ready(WAIT)
        transports["producer"].send("server1", np.arange(3))
        np.testing.assert_array_equal(transports["server1"].recv("producer", WAIT), np.arange(3))
    finally:
        for t in transports.values():
            t.close()
