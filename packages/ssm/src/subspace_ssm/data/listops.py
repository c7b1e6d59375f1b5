"""ListOps (Nangia & Bowman, 2018; the LRA version of Tay et al., 2021), generated on the fly.

An expression is a digit ``0``–``9`` or an operator applied to 2..``max_args`` expressions,
written in prefix form with a closing bracket: ``[MAX 2 9 [MIN 4 7 ] 0 ]`` → 9. Operators:

* ``MIN`` / ``MAX``: minimum / maximum of the arguments;
* ``MED``: ``int(median)`` of the arguments (for an even count the mean of the two middle
  values, truncated; as LRA's ``int(np.median(...))``);
* ``SM``: sum of the arguments modulo 10.

The label is the value of the whole expression (10 classes).

Generation follows LRA's process: a node at depth < ``max_depth`` is an operator with
probability ``value_p`` (0.25) and a digit otherwise, at ``max_depth`` always a digit; an
operator draws its arity uniformly in ``[2, max_args]`` and its kind uniformly. The root
is always an operator, and expressions whose token count falls outside
``[min_length, max_length]`` are rejected and redrawn (LRA: depth 10, 10 args, 500–2,000
tokens). Example ``i`` of a set is drawn from its own generator seeded by ``(seed, i)``,
so a set is a prefix of any larger set with the same parameters. With ``balanced=True``
example ``i`` is redrawn until its value is ``i mod 10`` (exactly balanced classes;
LRA's sets are not balanced).

Token ids (:data:`TOKENS`; :data:`VOCAB_SIZE` = ``subspace_ssm.zoo.LISTOPS_VOCAB`` = 18):
0 padding, 1..10 the digits 0..9, 11 ``[MIN``, 12 ``[MAX``, 13 ``[MED``, 14 ``[SM``, 15
``]``; 16 and 17 are reserved (never produced).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from subspace_ssm.data.base import SequenceSplit

__all__ = [
    "CLOSE",
    "OPERATORS",
    "PAD",
    "TOKENS",
    "VOCAB_SIZE",
    "decode",
    "encode",
    "evaluate",
    "generate_listops",
    "sample_expression",
]

OPERATORS = ("MIN", "MAX", "MED", "SM")
PAD = 0
_DIGIT0 = 1
_OP0 = 11
CLOSE = 15
VOCAB_SIZE = 18
TOKENS = ("<pad>", *(str(d) for d in range(10)), *(f"[{op}" for op in OPERATORS), "]",
          "<reserved16>", "<reserved17>")
_ID = {tok: i for i, tok in enumerate(TOKENS[:CLOSE + 1])}


def _apply(op: str, values: Sequence[int]) -> int:
    if op == "MIN":
        return min(values)
    if op == "MAX":
        return max(values)
    if op == "MED":
        s = sorted(values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    return sum(values) % 10  # SM


def evaluate(tokens: Sequence[int] | torch.Tensor | str) -> int:
    """The exact value (0..9) of an expression given as token ids (padding ignored) or text.

    Raises ValueError on a malformed expression (unbalanced brackets, an operator with fewer
    than one argument, trailing tokens, unknown ids).
    """
    ids = encode(tokens) if isinstance(tokens, str) else [int(t) for t in torch.as_tensor(tokens).flatten()]
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for pos, t in enumerate(ids):
        if t == PAD:
            continue
        if result is not None:
            raise ValueError(f"tokens: expected the expression to end, got token {t} at {pos}")
        if _DIGIT0 <= t < _OP0:
            value = t - _DIGIT0
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif _OP0 <= t < CLOSE:
            stack.append((OPERATORS[t - _OP0], []))
        elif t == CLOSE:
            if not stack:
                raise ValueError(f"tokens: unmatched ']' at position {pos}")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"tokens: operator [{op} with no arguments closed at {pos}")
            value = _apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        else:
            raise ValueError(f"tokens: expected ids in [0, {CLOSE}], got {t} at position {pos}")
    if stack:
        raise ValueError(f"tokens: {len(stack)} unclosed operator(s) at the end")
    if result is None:
        raise ValueError("tokens: expected an expression, got no tokens")
    return result


def encode(text: str) -> list[int]:
    """Token ids of a whitespace-separated expression, e.g. ``"[SM 3 4 ]"`` → ``[14, 4, 5, 15]``."""
    try:
        return [_ID[tok] for tok in text.split()]
    except KeyError as exc:
        raise ValueError(f"text: unknown token {exc.args[0]!r}; expected one of "
                         f"{list(_ID)[1:]}") from None


def decode(tokens: Sequence[int] | torch.Tensor) -> str:
    """Text of token ids (padding dropped)."""
    return " ".join(TOKENS[int(t)] for t in torch.as_tensor(tokens).flatten() if int(t) != PAD)


class _TooLong(Exception):
    pass


def _draw(rng: np.random.Generator, depth: int, max_depth: int, max_args: int, value_p: float,
          out: list[int], budget: int) -> None:
    """Append one random subtree's tokens to ``out`` (raise _TooLong past ``budget``)."""
    is_op = depth == 1 or (depth < max_depth and rng.random() < value_p)
    if not is_op:
        out.append(_DIGIT0 + int(rng.integers(10)))
    else:
        out.append(_OP0 + int(rng.integers(len(OPERATORS))))
        for _ in range(int(rng.integers(2, max_args + 1))):
            _draw(rng, depth + 1, max_depth, max_args, value_p, out, budget)
        out.append(CLOSE)
    if len(out) > budget:
        raise _TooLong


def sample_expression(rng: np.random.Generator, *, max_depth: int = 10, max_args: int = 10,
                      min_length: int = 500, max_length: int = 2000, value_p: float = 0.25,
                      max_tries: int = 100_000) -> list[int]:
    """Token ids of one random expression with ``min_length <= len <= max_length``."""
    for _ in range(max_tries):
        out: list[int] = []
        try:
            _draw(rng, 1, max_depth, max_args, value_p, out, max_length)
        except _TooLong:
            continue
        if len(out) >= min_length:
            return out
    raise RuntimeError(f"sample_expression: no expression of {min_length}..{max_length} tokens in "
                       f"{max_tries} draws (max_depth={max_depth}, max_args={max_args}, "
                       f"value_p={value_p}); widen the length range or raise max_depth")


def _check(n: int, max_depth: int, max_args: int, min_length: int, max_length: int,
           value_p: float) -> None:
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    if max_depth < 2:
        raise ValueError(f"max_depth: expected >= 2 (the root is an operator), got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args: expected >= 2, got {max_args}")
    if not 4 <= min_length <= max_length:
        raise ValueError(f"min_length, max_length: expected 4 <= min_length <= max_length, got "
                         f"{min_length}, {max_length}")
    if not 0.0 < value_p < 1.0:
        raise ValueError(f"value_p: expected a probability in (0, 1), got {value_p}")


def generate_listops(n: int, *, seed: int = 0, max_depth: int = 10, max_args: int = 10,
                     min_length: int = 500, max_length: int = 2000, value_p: float = 0.25,
                     balanced: bool = False, pad_to: int | None = None) -> SequenceSplit:
    """``n`` ListOps examples: tokens ``x`` int64 ``[n, pad_to or max_length]`` (right-padded
    with 0), ``mask`` bool (True on real tokens), labels ``y`` (the values), 10 classes.

    Deterministic given the arguments; see the module doc for the process and ``balanced``.
    """
    _check(n, max_depth, max_args, min_length, max_length, value_p)
    width = max_length if pad_to is None else pad_to
    if width < max_length:
        raise ValueError(f"pad_to: expected >= max_length={max_length}, got {pad_to}")
    x = torch.zeros(n, width, dtype=torch.int64)
    y = torch.empty(n, dtype=torch.int64)
    kw = dict(max_depth=max_depth, max_args=max_args, min_length=min_length,
              max_length=max_length, value_p=value_p)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        while True:
            ids = sample_expression(rng, **kw)
            value = evaluate(ids)
            if not balanced or value == i % 10:
                break
        x[i, : len(ids)] = torch.tensor(ids)
        y[i] = value
    return SequenceSplit(x, y, 10, x != PAD)
