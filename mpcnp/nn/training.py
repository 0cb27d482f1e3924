"""Training and evaluating a model on private data: ``fit`` and ``evaluate``.

A model here is anything callable on a batch with a ``parameters()`` method (an ``nn.Sequential``
after ``private(owner)``); ``fit`` runs minibatch training with a loss (``nn.CrossEntropyLoss``, ...)
and an optimizer (``nn.optim.SGD``, ``nn.optim.Adam``) built on those parameters.

What training reveals, and to whom:
- Nothing by default. Parameters, gradients, optimizer state, losses and data stay shared.
- Shapes are public, as always: the number of samples and features, the batch size, the epochs.
- The order of the samples: batches follow a permutation of the rows that every party computes from
  a public seed (``seed``; None: server0 draws one from os.urandom and sends it to every party in the
  clear). It depends on nothing in the data, so it reveals nothing about it.
- With ``report_to`` (a party or a list of parties): after each epoch the epoch's mean training loss,
  and the accuracy if ``metrics`` asks for it, revealed to those parties only (one number each).
- ``evaluate`` reveals its loss and accuracy to the parties of ``to``, nothing else.
- The progress display shows the epoch, batches and seconds on one party (``progress``), and the
  reported numbers where that party received them.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

import numpy as np

import mpcnp as mp

try:  # the optional extra "progress"; a plain line per epoch without it
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _tqdm = None

__all__ = ["fit", "evaluate", "count_correct", "METRICS"]

METRICS = ("loss", "accuracy")


# ---- helpers -----------------------------------------------------------------------------------------
def _rows(data) -> int:
    shape = data.shape if isinstance(data, (mp.PrivateTensor, mp.PublicTensor)) else np.shape(data)
    if not shape:
        raise ValueError("training data needs a first axis of samples, got a 0-d value")
    return shape[0]


def _take(data, index: np.ndarray):
    """The rows ``index`` of private, public or NumPy data (local for tensors)."""
    if isinstance(data, (mp.PrivateTensor, mp.PublicTensor)):
        return data[index]
    return np.asarray(data, dtype=np.float64)[index]


def _receivers(to) -> tuple[str, ...]:
    if to is None:
        return ()
    names = (to,) if isinstance(to, str) else tuple(to)
    mp.public(0.0).reveal(to=names)      # an unknown name raises ValueError here, before any work
    return names


def _agreed_seed(seed: int | None) -> int:
    """The permutations' public seed: ``seed``, or one server0 draws and sends to every party."""
    if seed is not None:
        return int(seed)
    drawn = mp.public(lambda: float(int.from_bytes(os.urandom(6), "little")), owner="server0")
    return int(drawn.value)


def _task(loss, output_shape) -> str | None:
    task = getattr(loss, "task", None)
    if task is not None or loss is not None:
        return task
    return "classes" if len(output_shape) == 2 and output_shape[1] > 1 else "binary"


def count_correct(output, target, task: str):
    """The number of samples whose prediction matches ``target``, as a 0-d tensor (private when
    output or target is). ``task`` "classes": argmax of logits (N, K) against integer labels (N,) or
    one-hot rows; one argmax (securenn: exact) and one batched comparison of 2N elements.
    "binary": [logit > 0] against 0/1 targets of the logits' shape; one comparison and a product."""
    if task == "classes":
        if len(output.shape) != 2:
            raise ValueError(f"accuracy over classes needs logits (N, classes), got shape {output.shape}")
        if len(_shape(target)) == 2:
            target = (target * np.arange(output.shape[1], dtype=np.float64)).sum(axis=1)
        difference = mp.argmax(output, axis=1) - target
        close = mp.stack([difference, -difference]) > -0.5      # |d| < 1/2 where both hold
        return (close[0] + close[1] - 1.0).sum()
    if task == "binary":
        predicted = output > 0
        return (1.0 - predicted - target + predicted * target * 2.0).sum()
    raise ValueError(f"accuracy needs a classification loss (task 'classes' or 'binary'), got task {task!r}")


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, (mp.PrivateTensor, mp.PublicTensor)) else np.shape(value)


class _Display:
    """One epoch's progress: a tqdm bar over its batches when tqdm is installed, else one line at its end."""

    def __init__(self, shown: bool, epoch: int, epochs: int, batches: int) -> None:
        self.shown, self.epoch, self.epochs, self.batches = shown, epoch, epochs, batches
        self.start = time.perf_counter()
        self.bar = (_tqdm(total=batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", file=sys.stderr)
                    if shown and _tqdm is not None else None)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def finish(self, numbers: dict) -> None:
        if not self.shown:
            return
        text = "".join(f", {name} {value:.4f}" for name, value in numbers.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text.lstrip(", "))
            self.bar.close()
        else:
            print(f"epoch {self.epoch + 1}/{self.epochs}: {self.batches} batches in "
                  f"{time.perf_counter() - self.start:.1f} s{text}", flush=True)


def _summed(value, loss, size: int):
    """A batch's loss as a sum over its samples."""
    reduction = getattr(loss, "reduction", "mean")
    if reduction == "none":
        return value.sum()
    return value * size if reduction == "mean" else value


# ---- fit and evaluate --------------------------------------------------------------------------------
def fit(model, x, y, epochs: int = 1, batch_size: int = 32, loss=None, optimizer=None, progress=True,
        shuffle: bool = True, seed: int | None = None, report_to=None,
        metrics: Sequence[str] = ("loss",)) -> dict | None:
    """Train ``model`` on rows of ``x`` (features) and ``y`` (targets) for ``epochs`` passes in
    minibatches of ``batch_size`` rows (the last may be smaller): forward, ``loss``, backward,
    ``optimizer.step()``. Call inside ``mp.run`` on every party, as every mpcnp function.

    ``x``, ``y``: private or public tensors or arrays with one row per sample, assembled by the caller
    from any number of owners (``mp.concat`` of rows or of columns); labels may come from one party.
    ``loss``: an ``nn`` loss (``CrossEntropyLoss``, ``BCEWithLogitsLoss``, ``MSELoss``); ``optimizer``:
    an ``nn.optim`` optimizer over ``model.parameters()``. ``shuffle``: batches follow a fresh public
    permutation each epoch (from ``seed``: see the module docstring); False keeps the rows' order.
    ``report_to``: the parties that learn, after each epoch, the mean loss and/or accuracy
    (``metrics``, from "loss" and "accuracy"); None (default): nobody learns anything.
    ``progress``: True shows a per-epoch display on the first ``report_to`` party (server0 if none),
    a party name shows it there, False shows none.
    Returns {"loss": [per epoch], "accuracy": [...]} (the metrics asked for) on the ``report_to``
    parties, None elsewhere.
    Cost: that of the forward and backward passes and the optimizer's step per batch; each reported
    metric adds one reveal per epoch (accuracy also an argmax and a comparison per sample).
    """
    if loss is None or optimizer is None:
        raise ValueError("fit needs loss= (say nn.CrossEntropyLoss()) and optimizer= (say "
                         "nn.optim.SGD(model.parameters(), lr=0.1))")
    n = _rows(x)
    if _rows(y) != n:
        raise ValueError(f"fit: x has {n} rows but y has {_rows(y)}")
    if not (isinstance(epochs, int) and epochs >= 0 and isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"fit needs epochs >= 0 and batch_size >= 1 (ints), got {epochs!r} and {batch_size!r}")
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    receivers = _receivers(report_to)
    shown = _display_party(progress, receivers) == mp.party()
    rng = np.random.default_rng(_agreed_seed(seed) if shuffle else 0)
    batches = -(-n // batch_size)
    history: dict[str, list] = {m: [] for m in metrics}
    for epoch in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        display = _Display(shown, epoch, epochs, batches)
        totals: dict = {}
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            xb, yb = _take(x, index), _take(y, index)
            output = model(xb)
            value = loss(output, yb)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            if receivers:
                with mp.no_grad():
                    batch = {}
                    if "loss" in metrics:
                        batch["loss"] = _summed(value.detach(), loss, len(index))
                    if "accuracy" in metrics:
                        batch["accuracy"] = count_correct(output.detach(), yb, _task(loss, output.shape))
                    totals = {k: batch[k] if k not in totals else totals[k] + batch[k] for k in batch}
            display.advance()
        numbers = {}
        for name in metrics if receivers else ():
            revealed = totals[name].reveal(to=receivers) if n else None   # the sum: divided in float64
            if revealed is not None:
                numbers[name] = float(revealed) / n
                history[name].append(numbers[name])
        display.finish(numbers)
    return history if mp.party() in receivers else None


def _display_party(progress, receivers: tuple[str, ...]) -> str | None:
    if progress is True:
        return receivers[0] if receivers else "server0"
    return progress if isinstance(progress, str) else None


def evaluate(model, x, y, loss=None, batch_size: int = 256, to=None, metrics: Sequence[str] | None = None) -> dict | None:
    """The mean ``loss`` and/or the accuracy of ``model`` on rows ``x``, ``y``, revealed to ``to`` (a
    party, a list, or None for every party); nothing is recorded for gradients.

    ``metrics``: from "loss" (needs ``loss``) and "accuracy" (classification: the loss's kind, or
    logits (N, K > 1) for classes and one logit per sample for binary); default: "loss" if a loss is
    given, and "accuracy" unless the loss is a regression loss. Returns {metric: float} on the
    receivers, None elsewhere. Cost: forward passes in batches of ``batch_size`` (a larger batch
    takes fewer rounds), the metrics' comparisons, one reveal per metric.
    """
    n = _rows(x)
    if _rows(y) != n or n == 0:
        raise ValueError(f"evaluate needs samples: x has {n} rows and y has {_rows(y)}")
    if metrics is None:
        metrics = (("loss",) if loss is not None else ()) + \
                  (("accuracy",) if loss is None or getattr(loss, "task", None) else ())
    metrics = tuple(metrics)
    if "loss" in metrics and loss is None:
        raise ValueError("evaluate: the metric 'loss' needs loss=")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"evaluate: choose metrics from {METRICS}, got {list(metrics)}")
    totals: dict = {}
    with mp.no_grad():
        for start in range(0, n, batch_size):
            index = np.arange(start, min(n, start + batch_size))
            xb, yb = _take(x, index), _take(y, index)
            output = model(xb)
            batch = {}
            if "loss" in metrics:
                batch["loss"] = _summed(loss(output, yb), loss, len(index))
            if "accuracy" in metrics:
                batch["accuracy"] = count_correct(output, yb, _task(loss, output.shape))
            totals = {k: batch[k] if k not in totals else totals[k] + batch[k] for k in batch}
    revealed = {name: totals[name].reveal(to=to) for name in metrics}     # sums: divided in float64
    if any(v is None for v in revealed.values()):
        return None
    return {name: float(value) / n for name, value in revealed.items()}
