r"""Scheme words over A, B, O and the programs one optimizer step runs.

A word W such as ``"BAOAB"`` is one integrator step of size h; a letter that occurs
k times in W uses h/k each time. The B's of W form *groups*: maximal runs of B's,
read cyclically, separated only by O's (O's do not move x, so every B of a group
needs the gradient at the same point).

With ONE group, write W = P S with S starting at the group's first B. Then

$$W^n = P\,(S P)^{n-1}\,S,$$

so the first ``step()`` runs P and every later one runs S P; each starts with all of
its B's before any A and needs only the gradient at its starting point: one gradient
per step, consecutive steps' kicks merged. The trailing S is outstanding after each
step (``Splitting.finalize`` applies it). With several groups a step runs all of W and
re-evaluates the gradient (``"G"``) before every group that follows an A.

Which A's may leave their RATTLE to the next op is decided here too, once per op list
(:func:`lower`): under linear transport an A followed by B or O leaves p' unprojected,
since P(a P u + v) = P(a u + v) lets that op's projection do it; such an O then
projects its whole result, $p \leftarrow P_x(c\,p + \sigma \xi)$.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["Program", "Step", "compile_scheme", "lower"]

Op = tuple[str, float]


@dataclass(frozen=True)
class Step:
    """One op of a step, with its projections decided.

    Attributes:
        letter: "A", "B", "O" or "G" (re-evaluate the gradient).
        fraction: the fraction of h this op uses.
        rattle: for an A, whether its drift applies the RATTLE (False: the next op
            projects the momentum at the same point).
        project: for an O, whether it projects its whole result (it carries the
            RATTLE the A before it left).
    """

    letter: str
    fraction: float
    rattle: bool = True
    project: bool = False


@dataclass(frozen=True)
class Program:
    """The op lists of a scheme word; an op is (letter, fraction of h) or ("G", 0.0).

    Attributes:
        word: the scheme word.
        first: ops of a step with no outstanding S (P; all of W for several groups).
        later: ops of a step after one whose S is outstanding (S P).
        finish: the outstanding ops S (empty for several groups or no B).
        groups: the number of B groups.
    """

    word: str
    first: tuple[Op, ...]
    later: tuple[Op, ...]
    finish: tuple[Op, ...]
    groups: int

    @property
    def needs_closure(self) -> bool:
        """Whether a step re-evaluates the gradient mid-step."""
        return any(letter == "G" for letter, _ in self.first)


def _count_groups(word: str) -> int:
    moves = word.replace("O", "")
    if "B" not in moves:
        return 0
    if "A" not in moves:
        return 1
    return sum(1 for i, c in enumerate(moves) if c == "B" and moves[i - 1] == "A")


def _group_start(word: str) -> int:
    """Index in ``word`` of the first B of the (single) group."""
    for i, c in enumerate(word):
        if c != "B":
            continue
        j = i - 1
        while word[j % len(word)] == "O" and j > i - len(word):
            j -= 1
        if word[j % len(word)] == "A":
            return i
    return word.index("B")


def _ops(letters: str, word: str) -> tuple[Op, ...]:
    """Letters as ops with fractions 1/k_letter.

    Adjacent B's merge into one kick and adjacent O's into one O (exact: two O's of
    fractions a, b are in law one O of fraction a + b).
    """
    ops: list[Op] = []
    for c in letters:
        f = 0.0 if c == "G" else 1.0 / word.count(c)
        if c in "BO" and ops and ops[-1][0] == c:
            ops[-1] = (c, ops[-1][1] + f)
        else:
            ops.append((c, f))
    return tuple(ops)


def _with_refresh(word: str) -> str:
    """W with a gradient re-evaluation "G" before each B group that follows an A."""
    out, fresh = [], True
    for c in word:
        if c == "A":
            fresh = False
        elif c == "B" and not fresh:
            out.append("G")
            fresh = True
        out.append(c)
    return "".join(out)


@functools.lru_cache(maxsize=64)
def compile_scheme(word: str) -> Program:
    """Parse and compile a scheme word (letters A, B, O; e.g. "BAOAB", "OBABO", "BAB").

    Raises:
        ValueError: if ``word`` is empty or has letters other than A, B, O.
    """
    if not isinstance(word, str) or not word or set(word) - set("ABO"):
        raise ValueError(
            f"scheme must be a non-empty word over the letters A, B, O "
            f"(e.g. 'BAOAB', 'OBABO', 'BAB'), got {word!r}"
        )
    groups = _count_groups(word)
    if groups == 0:
        ops = _ops(word, word)
        return Program(word, ops, ops, (), 0)
    if groups > 1:
        ops = _ops(_with_refresh(word), word)
        return Program(word, ops, ops, (), groups)
    j = _group_start(word)
    head, tail = word[:j], word[j:]
    if not head:
        ops = _ops(word, word)
        return Program(word, ops, ops, (), 1)
    return Program(word, _ops(head, word), _ops(tail + head, word), _ops(tail, word), 1)


@functools.lru_cache(maxsize=256)
def lower(ops: tuple[Op, ...], linear_transport: bool) -> tuple[Step, ...]:
    """``ops`` with their projections decided for a manifold with or without linear transport.

    With linear transport an A whose next op is B or O skips its RATTLE, and an O right
    after such an A projects its result; without, every A applies its RATTLE.
    """
    steps: list[Step] = []
    for i, (letter, fraction) in enumerate(ops):
        following = ops[i + 1][0] if i + 1 < len(ops) else ""
        leaves = linear_transport and letter == "A" and following in ("B", "O")
        carries = letter == "O" and bool(steps) and not steps[-1].rattle
        steps.append(Step(letter, fraction, rattle=not leaves, project=carries))
    return tuple(steps)
