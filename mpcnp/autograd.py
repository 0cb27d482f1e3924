"""Reverse-mode gradients of private tensors: the gradient recorder, the backward pass, custom gradients.

PyTorch's contract (``requires_grad``, ``loss.backward()``, ``.grad``, ``mp.no_grad()``), built as an
observer on the funnel every private operation passes through (mpcnp.tracing). ``mp.run`` installs
one ``Recorder`` per party. After each outermost operation whose operands include a tensor that
requires gradients (while recording is enabled), the recorder gives the result ``requires_grad`` and a
``grad_fn``: a ``Node`` holding the operation's name, operands and result value. The graph lives on
the tensors (no global tape), so a forward pass nobody differentiates costs no memory once its result
is dropped. ``backward`` walks the graph from a result in reverse topological order and applies each
operation's vector-Jacobian product, a rule of ``mpcnp.vjp`` keyed by the operation's name.

Every party runs the same backward pass (SPMD): the rules are ordinary tensor operations, observed
like the forward ones, so the program digest and validation mode see them too.

What backward reveals: nothing. Gradients are private tensors (public where every operand on their
path was public); only an explicit ``reveal`` opens one.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np

from mpcnp.tensor import PrivateTensor, PublicTensor, Tensor
from mpcnp.tracing import Event, Observer, grad_enabled, no_grad, user_frame
from mpcnp.vjp import NO_GRADIENT, RULES, as_tensor

__all__ = ["Node", "Recorder", "backward", "custom_gradient", "no_grad"]


def _tensors(args: tuple, kwargs: dict) -> Iterator[Tensor]:
    """The tensors among an operation's operands, items of sequence operands included."""
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, Tensor):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield from (item for item in arg if isinstance(item, Tensor))


class Node:
    """One recorded operation: what the backward pass needs to send the gradient of its result to its
    operands. It holds the result's value (not the result tensor, which holds the node: no cycle)."""

    __slots__ = ("op", "where", "rule", "args", "kwargs", "out", "inputs")

    def __init__(self, op: str, where: str, rule: Callable | None, args: tuple, kwargs: dict, result: Tensor):
        self.op, self.where, self.rule = op, where, rule
        self.args, self.kwargs = args, kwargs
        # the result's value and what the forward pass kept for its gradient (relu's bit, max's levels)
        self.out = result.detach() if isinstance(result, PrivateTensor) else result
        if hasattr(result, "_levels"):
            self.out._levels = result._levels
        # operands that need a gradient, with the value each had: an in-place update before backward
        # would make the saved value stale, which backward refuses
        self.inputs = [(t, getattr(t, "_value", None)) for t in _tensors(args, kwargs) if t.requires_grad]

    def parents(self) -> Iterator["Node"]:
        for tensor, _ in self.inputs:
            if tensor.grad_fn is not None:
                yield tensor.grad_fn

    def release(self) -> None:
        """Drop what the node keeps (operands, result): the graph is freed as backward goes."""
        self.args = self.kwargs = self.out = None
        self.inputs = []

    def describe(self) -> str:
        return f"{self.op} (called at {self.where})"


class Recorder(Observer):
    """A party's gradient recorder: records operations on tensors that require gradients."""

    def on_operation(self, event: Event) -> None:
        if not grad_enabled() or event.op in NO_GRADIENT or not isinstance(event.result, Tensor):
            return
        if not any(t.requires_grad for t in _tensors(event.args, event.kwargs)):
            return
        node = Node(event.op, event.where, RULES.get(event.op), event.args, event.kwargs, event.result)
        event.result.requires_grad = True
        event.result.grad_fn = node

    def backward(self, tensor: Tensor, gradient=None) -> None:
        backward(tensor, gradient)


def _seed(tensor: Tensor, gradient) -> Tensor:
    if gradient is None:
        if tensor.size != 1:
            raise RuntimeError(f"backward() without a gradient needs a 1-element result (a loss), got shape "
                               f"{tensor.shape}; pass gradient= of that shape")
        return PublicTensor(np.ones(tensor.shape))
    gradient = as_tensor(gradient)
    if gradient.shape != tensor.shape:
        raise ValueError(f"backward(): gradient of shape {gradient.shape} for a result of shape {tensor.shape}")
    return gradient


def _order(root: Node) -> list[Node]:
    """Every node ``root`` depends on, each after all the nodes that use its result (root first)."""
    post, seen, stack = [], {id(root)}, [(root, iter(list(root.parents())))]
    while stack:
        node, parents = stack[-1]
        for parent in parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append((parent, iter(list(parent.parents()))))
                break
        else:
            stack.pop()
            post.append(node)
    return post[::-1]


def backward(tensor: Tensor, gradient=None) -> None:
    """Accumulate the gradients of ``tensor`` into the ``.grad`` of the leaves it depends on (see
    ``Tensor.backward``). Runs with recording disabled; releases the graph it walks."""
    if not tensor.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad: no parameter it depends on "
                           "has requires_grad=True (or it was computed under mp.no_grad())")
    seed = _seed(tensor, gradient)
    if tensor.grad_fn is None:      # a leaf: its gradient is the seed
        _accumulate(tensor, seed)
        return
    pending: dict[int, Tensor] = {id(tensor.grad_fn): seed}
    with no_grad():
        for node in _order(tensor.grad_fn):
            g = pending.pop(id(node), None)
            if node.out is None:
                raise RuntimeError(f"backward through {node.describe()} a second time: its saved values were "
                                   "released by the first backward(); compute the forward pass again")
            if g is not None:
                _apply(node, g, pending)
            node.release()


def _apply(node: Node, g: Tensor, pending: dict[int, Tensor]) -> None:
    if node.rule is None:
        raise NotImplementedError(f"no gradient for {node.describe()}: gradients are defined for "
                                  f"{', '.join(sorted(RULES))}")
    wanted = {id(t): saved for t, saved in node.inputs}
    for operand, gradient_of in node.rule(g, node.out, *node.args, **node.kwargs):
        if id(operand) not in wanted:
            continue
        if isinstance(operand, PrivateTensor) and operand._value is not wanted[id(operand)]:
            raise RuntimeError(f"an operand of {node.describe()} was updated in place after it was used; "
                               "backward() needs the value it had (update parameters after backward)")
        grad = gradient_of()
        if grad.shape != operand.shape:
            raise AssertionError(f"gradient rule of {node.op} gave shape {grad.shape} for an operand of "
                                 f"shape {operand.shape}")
        if operand.grad_fn is None:
            _accumulate(operand, grad)
        else:
            key = id(operand.grad_fn)
            pending[key] = grad if key not in pending else pending[key] + grad


def _accumulate(leaf: Tensor, grad: Tensor) -> None:
    leaf.grad = grad if leaf.grad is None else leaf.grad + grad


# ---- custom gradients --------------------------------------------------------------------------------
def custom_gradient(fn: Callable) -> Callable:
    """Give a function of tensors its own gradient (TensorFlow's ``tf.custom_gradient``).

    ``fn(*args, **kwargs)`` returns ``(result, grad_fn)``; ``grad_fn(g)`` returns one gradient per
    positional argument of ``fn`` (None for those that need none), each of that argument's shape.
    ``fn`` runs with recording disabled; when a positional tensor argument requires gradients, the
    result is recorded as one operation whose backward pass is ``grad_fn``. The losses use it:
    cross-entropy's gradient softmax - onehot needs neither the log nor the softmax's own gradient.
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with no_grad():
            result, grad_fn = fn(*args, **kwargs)
        if not isinstance(result, Tensor):
            raise TypeError(f"{fn.__name__} must return (tensor, grad_fn), got {type(result).__name__}")
        if grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            if any(result is a for a in args):
                result = result.detach()      # never graft a node onto an input

            def rule(g, out, *operands, **_):
                grads = grad_fn(g)
                if len(grads) != len(operands):
                    raise ValueError(f"{fn.__name__}'s grad_fn returned {len(grads)} gradients for "
                                     f"{len(operands)} arguments")
                for operand, grad in zip(operands, grads):
                    if grad is not None:
                        yield operand, (lambda grad=grad: as_tensor(grad))

            node = Node(fn.__name__, user_frame(), rule, args, kwargs, result)
            result.requires_grad = True
            result.grad_fn = node
        return result
    return wrapped

