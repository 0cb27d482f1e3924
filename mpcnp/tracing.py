"""The funnel every private operation of the tensor layer passes through, and the observers on it.

Each user-visible operation on private tensors (an operator, a method, a function of the API) is
wrapped by ``operation(name)``. After the operation has run, every observer active on the calling
party sees one ``Event``: the operation's name, its operands as passed, its result and the place in
the user's code that called it. Operations called by other operations (softmax calls exp) are not
reported separately: an observer sees what the user wrote. Observers are per party (a context
variable of the party's thread) and are installed for a block with ``observe``; the program layer
installs them for a whole run (validation, the program digest), the training layer for a tape.

``before_reveal`` is called by ``reveal`` before anything is opened, so that an observer can still
stop the run (the program digest compares there).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

__all__ = ["Event", "Observer", "operation", "observe", "observers", "before_reveal", "user_frame"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Event:
    """One private operation as the user called it."""

    op: str                                 # the API's name: "mul", "matmul", "relu", "sigmoid", ...
    args: tuple                             # the operands as passed (tensors, arrays, scalars)
    kwargs: dict = field(default_factory=dict)
    result: Any = None
    where: str = "?"                        # "file:line" of the user's call
    replay: Callable[..., Any] | None = field(default=None, repr=False)
    # ``replay(*args, **kwargs)`` makes the same call on other operands (public ones, say): the
    # method of that name on the first operand, or the same function.


class Observer:
    """What an observer implements; both methods are optional no-ops here."""

    def on_operation(self, event: Event) -> None:
        """Called on the party after every outermost private operation."""

    def before_reveal(self, tensor: Any, receivers: tuple[str, ...]) -> None:
        """Called on the party before ``tensor`` is opened to ``receivers``."""


_observers: contextvars.ContextVar[tuple[Observer, ...]] = contextvars.ContextVar("mpcnp_observers", default=())
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mpcnp_operation_depth", default=0)


def observers() -> tuple[Observer, ...]:
    """The observers active on the calling party."""
    return _observers.get()


@contextlib.contextmanager
def observe(*added: Observer) -> Iterator[None]:
    """Within the block, ``added`` observers see this party's operations too."""
    token = _observers.set(_observers.get() + added)
    try:
        yield
    finally:
        _observers.reset(token)


def user_frame() -> str:
    """"file:line" of the innermost caller outside the mpcnp package (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def operation(name: str, method: bool = False, private: Callable[..., bool] | None = None) -> Callable:
    """Decorate an operation of the tensor layer: its outermost calls on private operands are
    reported to the party's observers. ``method``: the operation is a method of the tensor types
    (replayed by name on the first operand). ``private(*args, **kwargs)`` says whether a call
    involves a private tensor (default: any positional operand, or any item of a sequence operand,
    has a ``_ctx``)."""
    def involves_private(args, kwargs) -> bool:
        if private is not None:
            return private(*args, **kwargs)
        for arg in args:
            if hasattr(arg, "_ctx"):
                return True
            if isinstance(arg, (list, tuple)) and any(hasattr(item, "_ctx") for item in arg):
                return True
        return False

    def wrap(fn: Callable) -> Callable:
        def replay_method(first, *rest, **kwargs):
            return getattr(first, fn.__name__)(*rest, **kwargs)

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            active = _observers.get()
            depth = _depth.get()
            if depth or not active:
                return fn(*args, **kwargs)
            token = _depth.set(depth + 1)
            try:
                result = fn(*args, **kwargs)
            finally:
                _depth.reset(token)
            if involves_private(args, kwargs):
                event = Event(name, args, kwargs, result, user_frame(), replay_method if method else traced)
                for observer in active:
                    observer.on_operation(event)
            return result
        return traced
    return wrap


def before_reveal(tensor: Any, receivers: tuple[str, ...]) -> None:
    """Tell the party's observers that ``tensor`` is about to be opened to ``receivers``."""
    for observer in _observers.get():
        observer.before_reveal(tensor, receivers)
