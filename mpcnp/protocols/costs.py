"""The one table of protocol costs: bytes and rounds of every protocol, beside SecureNN's figures.

Bytes are payload bytes summed over all parties (framing headers excluded: see mpcnp.net.stats);
rounds are the counted communication depth (the Lamport clock of mp.stats), the longest chain of
messages each sent after the previous one was received. The paper's figures are those of Wagh, Gupta,
Chandran, "SecureNN", PoPETs 2019(3), Tables 1-2 (l = 64, one byte per Z_p element). The cost tests
(tests/test_costs.py) measure every row, ``python -m mpcnp costs`` prints the table, and the README's
table is this table's markdown (a test keeps them equal).

A formula is text in the row's dimensions (``n`` elements; matmul ``m, n, v``; conv2d ``x, w, z``
for the input, kernel and output sizes and, for the paper's im2col form, ``m, f, i, o``; dmaxpool
``window``; the bounded comparisons ``k``, the bits of the range, ``s``, the low bits a coarse
comparison skips, and ``w``, the bytes of the smallest unsigned integer holding k bits),
evaluated by ``Cost.bytes(**dims)``.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

__all__ = ["Cost", "COSTS", "table", "markdown"]

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv}


def _evaluate(formula: str, dims: dict[str, int]) -> int:
    """The value of an arithmetic formula (integers, names, + - * //, parentheses)."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in dims:
                raise KeyError(f"the formula {formula!r} needs the dimension {node.id!r}")
            return int(dims[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unsupported term in cost formula {formula!r}")
    return walk(ast.parse(formula, mode="eval"))


@dataclass(frozen=True)
class Cost:
    """One protocol's cost: ``formula`` (bytes) and ``rounds``, the paper's ``paper_formula`` and
    ``paper_rounds`` (None where the paper has no such protocol), and ``why`` ours differ."""

    name: str
    what: str
    formula: str
    rounds: int
    paper_formula: str | None
    paper_rounds: int | None
    why: str

    def bytes(self, **dims: int) -> int:
        """Payload bytes summed over all parties for these dimensions."""
        return _evaluate(self.formula, dims)

    def paper_bytes(self, **dims: int) -> int | None:
        """The paper's bytes for these dimensions, or None."""
        return None if self.paper_formula is None else _evaluate(self.paper_formula, dims)


_ROWS = [
    Cost("matmul", "matmul m x n by n x v", "8*(2*m*n + 2*n*v + m*v)", 1, "8*(2*m*n + 2*n*v + m*v)", 2,
         "the producer's c1 and the servers' opening are independent messages: 1 counted round"),
    Cost("multiply", "elementwise multiply, per element", "40*n", 1, "40*n", 2, "as matmul"),
    Cost("conv2d", "conv2d (input x, kernel w, output z elements)", "8*(2*x + 2*w + z)", 1,
         "8*(2*m*m*f*f*i + 2*f*f*o*i + m*m*o)", 2,
         "conv-shaped triples open input- and kernel-sized masks, not im2col-sized ones"),
    Cost("truncate_exact", "exact truncation of n elements (by at most 32 bits)", "4*n + 2*((n + 7)//8)", 1,
         None, None, "the wrap bit m0 OR m1 of the known-MSB argument: a packed bit each way, the producer's "
         "a b mod 2^32"),
    Cost("divide_exact", "exact division by a public integer of n elements", "8*n + 2*((n + 7)//8)", 1,
         None, None, "as exact truncation"),
    Cost("private_compare", "PrivateCompare, per element", "128*n", 1, "128*n", 1, "the same"),
    Cost("share_convert", "ShareConvert, per element", "224*n", 4, "304*n", 4,
         "the producer's messages PRF-compressed (steps 2, 4)"),
    Cost("compute_msb", "ComputeMSB, per element", "224*n", 4, "360*n", 5,
         "PRF compression; the producer deals beta' XOR LSB(x), replacing the multiplication"),
    Cost("drelu", "DReLU, per element", "213*n", 3, "664*n", 8,
         "one 63-bit PrivateCompare on the opened a + r (Falcon); r's Z_L shares cost no message"),
    Cost("drelu_bounded", "DReLU bounded to k bits, a in [-2^(k-1), 2^(k-1)) (s low bits skipped, x opened in w bytes), per element",
         "(3*(k - s) + 5 + 2*w)*n", 3, "664*n", 8,
         "PrivateCompare on the k-1-s bits that decide the sign of a + 2^(k-1); only x mod 2^k opened"),
    Cost("drelu_thresholds", "DReLU of a - T_j for J public thresholds T_j under one mask (exact range reductions), "
         "per element", "(79 + 134*J)*n", 3, "664*J*n", 8,
         "a + r opened once and r's 63 bits dealt once; each threshold's own PrivateCompare and z"),
    Cost("drelu_pets", "DReLU by PETS' chain, per element", "448*n", 7, "664*n", 8,
         "ShareConvert and ComputeMSB as above"),
    Cost("relu", "ReLU, per element", "221*n", 3, "704*n", 10,
         "DReLU as above; the producer also deals z r, so the product with a = x - r is local"),
    Cost("relu_bounded", "ReLU bounded to k bits (s low bits skipped), per element", "(3*(k - s) + 29)*n", 3,
         "704*n", 10, "bounded DReLU as above, x opened whole for the folded product"),
    Cost("relu_times", "ReLU with its bit's product by another value folded in (8 bytes less when that "
         "value was opened before), per element", "245*n", 3, "744*n", 12,
         "the other value opened in the message of a + r, the producer deals z m beside z: no round more; "
         "PETS: ReLU then SelectShare's product"),
    Cost("truncate_relu", "exact truncation of n products then their ReLU, fused (k bits of the product, "
         "x opened in w bytes)", "(3*k + 29 + 2*w)*n + 4*n + 2*((n + 7)//8)", 3, None, None,
         "the truncation's bits travel with the opening of a + r, the truncated value is opened under its "
         "own mask in PrivateCompare's round: one round less than truncate_exact then relu, 16 bytes more"),
    Cost("relu_pets", "ReLU by PETS' chain, per element", "488*n", 8, "704*n", 10,
         "DReLU by PETS' chain as above, then the product"),
    Cost("select_share", "SelectShare, per element", "40*n", 1, "40*n", 2,
         "the producer's c1 and the opening are independent: 1 counted round"),
    Cost("max_step", "max step (value only), per window", "221*n", 3, "744*n", 9,
         "max = other + relu(best - other) with ReLU as above"),
    Cost("maxpool_step", "MaxPool step (value and index), per window", "245*n", 3, "744*n", 9,
         "as max step, the bit's product with the index folded into the comparison (24 bytes)"),
    Cost("dmaxpool", "DMaxPool over a window of size window, per window", "8*(window + 2)*n", 2,
         "16*(window + 1)*n", 2, "server0's share of the one-hot vector PRF-compressed"),
    Cost("division_step", "Division, per element and quotient bit (the first step: +16)", "221*n", 3,
         "704*n", 10, "DReLU as above with the bit's product by the divisor folded in; the divisor's mask is "
         "opened once"),
    Cost("inverse_sqrt", "inverse_sqrt_times of n elements at frac_bits 16 (securenn, rel_error 1e-6)",
         "707*n + 16*((n + 7)//8) + 6*((2*n + 7)//8)", 29, None, None,
         "3 bounded, blurred ReLUs (119, 83, 65 B), each with the numerator's product by its bit folded in "
         "(24 B), a degree-4 guess, 3 Newton steps of 84 B, the last product; 8 exact truncations of n "
         "elements and 3 of 2n"),
    Cost("inverse_sqrt_adam", "inverse_sqrt_times of n elements at frac_bits 16 (securenn, rel_error 1e-3: Adam's)",
         "623*n + 14*((n + 7)//8) + 4*((2*n + 7)//8)", 25, None, None,
         "as above with 2 Newton steps"),
]
COSTS: dict[str, Cost] = {row.name: row for row in _ROWS}


def table() -> list[tuple[str, str, str]]:
    """Rows (operation, ours as "bytes, rounds", the paper's) for printing."""
    def cell(formula, rounds):
        if formula is None:
            return "-"
        return f"{formula} B, {rounds} round{'s' if rounds != 1 else ''}"
    return [(row.what, cell(row.formula, row.rounds), cell(row.paper_formula, row.paper_rounds))
            for row in _ROWS]


def markdown() -> str:
    """The table as markdown, as the README shows it."""
    lines = ["| operation | mpcnp | SecureNN (PETS) |", "|---|---|---|"]
    lines += [f"| {what} | {ours} | {paper} |" for what, ours, paper in table()]
    return "\n".join(lines)
