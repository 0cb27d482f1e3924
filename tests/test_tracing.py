"""The operation funnel (mpcnp.tracing): observers see each outermost private operation once, with
its operands, result and the user's file:line; an event replays on public operands as NumPy would;
reveal tells the observers first."""
from __future__ import annotations

import numpy as np

import mpcnp as mp
from mpcnp import tracing


class Recorder(tracing.Observer):
    def __init__(self):
        self.events, self.reveals = [], []

    def on_operation(self, event):
        self.events.append(event)

    def before_reveal(self, tensor, receivers):
        self.reveals.append((tensor.shape, receivers))


def test_observers_see_outermost_operations_with_the_users_line():
    def program():
        recorder = Recorder()
        with tracing.observe(recorder):
            x = mp.private(lambda: np.array([1.0, -2.0, 3.0]), owner="alice")
            y = mp.softmax(x * 2.0)                     # softmax's own exp, max, products: not reported
            z = (x > 0) + mp.public(np.ones(3))
            line = tracing.user_frame()
            y.reveal(to="alice")
            z.reveal()
        public = [e.replay(*[mp.public(np.array([1.0, -2.0, 3.0])) if hasattr(a, "_ctx") else a
                             for a in e.args], **e.kwargs) for e in recorder.events[1:3]]
        return [e.op for e in recorder.events], recorder.events[1].where, line, recorder.reveals, \
            [p.value for p in public]

    results = mp.run(program, parties=["alice"])
    ops, where, line, reveals, public = results["server0"]
    assert ops == ["private", "mul", "softmax", "gt", "add"]
    path, number = where.rsplit(":", 1)
    assert path == __file__ and int(number) == int(line.rsplit(":", 1)[1]) - 2
    assert reveals == [((3,), ("alice",)), ((3,), ("server0", "server1", "producer", "alice"))]
    np.testing.assert_array_equal(public[0], [2.0, -4.0, 6.0])        # the mul replayed on public values
    np.testing.assert_allclose(public[1], np.exp([1, -2, 3]) / np.exp([1, -2, 3]).sum())


def test_without_observers_nothing_is_recorded_and_public_operations_never_are():
    def program():
        recorder = Recorder()
        x = mp.private(lambda: np.ones(2), owner="server0")
        with tracing.observe(recorder):
            mp.public(np.ones(2)) * 3 + 1                # public only
        x * 2
        return len(recorder.events)

    assert mp.run(program)["server0"] == 0
