"""Linearizability checker for key-value histories (standard library only).

The search is Wing & Gong's algorithm as improved by Lowe, with the memoization used by
knossos and porcupine: a cache of ``(set of linearized ops, model state)`` pairs that have
already been explored, the set being a bitset held in a Python ``int``. Calls and returns
are entries of a doubly linked list; linearizing an op *lifts* its call and return entries
out of the list and backtracking *unlifts* them (dancing links, as porcupine does). The
search is iterative (an explicit stack), so histories of thousands of ops do not hit the
recursion limit.

Model
=====
A map from key to value, every key initially absent (``None``). Operations:

* ``read``: returns the key's current value (``None`` = absent).
* ``write(v)``: sets the key to ``v``.
* ``cas(old, new)``: sets the key to ``new`` only if its current value equals ``old``;
  reports whether it did (``True``: swapped, ``False``: current value was not ``old``).

Every operation touches exactly one key, so the history is partitioned by key and each
key's sub-history is checked on its own (a history is linearizable iff every per-key
sub-history is). Values are ``int``, ``str`` or ``None``; keys are ``str`` or ``None``
(``None`` is the single register of a history without a key column).

Outcomes
========
* Known outcome (``Op.ret`` is a time): the op took effect atomically at some instant
  between ``call`` and ``ret`` and returned ``output``.
* Unknown outcome (``Op.ret is None``; Jepsen ``:info``, an invoke never completed by the
  end of the history, or ``:fail :read :timed-out``): the op may have taken effect at any
  instant after its call, or never. It is given a return time of +infinity, after every
  other event; since its output is unknown the model accepts any result (a ``cas`` may
  swap or not), so "never" is the same as "last". An unknown ``read`` constrains nothing
  and is dropped before the search.
* Definite failure (Jepsen ``:fail``): the op did not take effect. A failed ``write`` (or
  a failed ``read`` other than ``:timed-out``) is dropped by the parser: it is not
  representable as an ``Op``, and callers of the Python API must simply omit it. A failed
  ``cas`` stays in the history with ``output=False`` ("the current value was not OLD")
  and must be linearized at an instant where the value was not ``old``.

This matches the etcd model in porcupine's test suite, and returns the same verdict on
the Jepsen etcd histories it ships.

Events whose times are equal are ordered calls first, so ops whose intervals only touch
are treated as concurrent (the permissive choice; porcupine does the same).

Text format
===========
The Jepsen log format, one event per line, optionally prefixed by
``INFO  jepsen.util - ``; columns are separated by tabs (any whitespace is accepted)::

    <process>  <type>  <f>  <value>  [<key>]

* ``process``: client id, a non-negative integer. A process has at most one operation
  outstanding. (Extension: after ``:info`` a process may invoke again; the unknown op
  stays pending forever. Jepsen itself always uses a fresh process id instead.)
* ``type``: ``:invoke``, ``:ok``, ``:fail`` or ``:info`` (see Outcomes).
* ``f``: ``:read``, ``:write`` or ``:cas``.
* ``value``: an atom -- ``nil``, an integer (``-?[0-9]+``) or a JSON string literal
  (``"abc"``) -- or a pair ``[OLD NEW]`` of atoms for ``:cas``, or a keyword such as
  ``:timed-out`` on ``:fail``/``:info`` lines. ``:invoke :read`` carries ``nil``; ``:ok
  :read`` carries the value read; completion values other than that are ignored.
* ``key`` (extension, optional 5th column): the key the op acts on. Either a bare token
  (no whitespace, not starting with ``"``; taken verbatim as a string, so ``7`` is the
  string ``"7"``) or a JSON string literal. Lines without it act on the default key
  ``None``. A completion line may omit the key (it inherits the invoke's); if present it
  must equal the invoke's key.

Lines that are blank, start with ``#``, carry another logger prefix, or carry the
``jepsen.util`` prefix but a non-integer process (``:nemesis``) are ignored. Any other line
that starts with a digit must be a well-formed event, or :class:`HistoryFormatError` is
raised. Time is the line number: a parsed op has ``call`` = line of its invoke and
``ret`` = line of its completion (1-based).

:func:`format_history` writes ops back in this format (with the prefix, tab separated, the
key column only when the key is not ``None``). Event order follows the ops' times (ties:
calls first), which preserves which ops overlap; an unknown op's ``:info`` line is written
just before the same client's next invoke, or at the end of the file.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

__all__ = [
    "CheckTimeoutError",
    "HistoryFormatError",
    "Key",
    "Op",
    "OpKind",
    "Result",
    "Value",
    "cas_op",
    "check_file",
    "check_history",
    "describe_op",
    "format_history",
    "parse_file",
    "parse_history",
    "read_op",
    "write_history",
    "write_op",
]

Value: TypeAlias = int | str | None
"""A register value; ``None`` means the key is absent."""

Key: TypeAlias = str | None
"""A key; ``None`` is the default key (single-register histories)."""

OpKind: TypeAlias = Literal["read", "write", "cas"]

_KINDS: tuple[OpKind, ...] = ("read", "write", "cas")
_READ, _WRITE, _CAS = 0, 1, 2
_KIND_CODE = {"read": _READ, "write": _WRITE, "cas": _CAS}


class HistoryFormatError(ValueError):
    """A history file (or text) is malformed. ``lineno`` is 1-based, 0 if not line-bound."""

    def __init__(self, message: str, lineno: int = 0) -> None:
        super().__init__(f"line {lineno}: {message}" if lineno else message)
        self.lineno = lineno


class CheckTimeoutError(TimeoutError):
    """:func:`check_history` exceeded its ``timeout``; no verdict was reached."""


def _is_value(v: object) -> bool:
    return v is None or (isinstance(v, int | str) and not isinstance(v, bool))


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on one key.

    Contract (checked on construction, ``ValueError`` otherwise):

    * ``kind == "read"``: ``value`` is ``None``; ``output`` is the value read (``None`` =
      absent), or ``None`` when the outcome is unknown.
    * ``kind == "write"``: ``value`` is the value written; ``output`` is ``None``.
    * ``kind == "cas"``: ``value`` is the pair ``(old, new)``; ``output`` is ``True``
      (swapped) or ``False`` (current value was not ``old``), and ``None`` exactly when
      the outcome is unknown.
    * ``call`` is a finite time; ``ret`` is a time ``>= call``, or ``None`` when the outcome
      is unknown (the op may take effect at any time after ``call``, or never).

    Ops that definitely did not take effect (a failed read or write) must not be passed to
    the checker at all. ``client`` identifies the issuing client (used by the writer and
    in explanations; the checker does not require a client's ops to be sequential).
    """

    client: int
    kind: OpKind
    key: Key
    value: Value | tuple[Value, Value]
    output: Value | bool
    call: float
    ret: float | None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_CODE:
            raise ValueError(f"unknown op kind {self.kind!r}")
        if self.key is not None and not isinstance(self.key, str):
            raise ValueError(f"key must be str or None, not {self.key!r}")
        if not math.isfinite(self.call):
            raise ValueError(f"call time must be finite, not {self.call!r}")
        if self.ret is not None and not self.ret >= self.call:
            raise ValueError(f"return time {self.ret!r} precedes call time {self.call!r}")
        if self.kind == "read":
            if self.value is not None:
                raise ValueError("a read takes no input value")
            if not _is_value(self.output):
                raise ValueError(f"invalid read output {self.output!r}")
            if self.ret is None and self.output is not None:
                raise ValueError("a read with unknown outcome has no output")
        elif self.kind == "write":
            if not _is_value(self.value):
                raise ValueError(f"invalid write value {self.value!r}")
            if self.output is not None:
                raise ValueError("a write has no output")
        else:
            v = self.value
            if not (isinstance(v, tuple) and len(v) == 2 and _is_value(v[0]) and _is_value(v[1])):
                raise ValueError(f"cas value must be a pair (old, new), not {v!r}")
            if self.ret is None:
                if self.output is not None:
                    raise ValueError("a cas with unknown outcome has output None")
            elif not isinstance(self.output, bool):
                raise ValueError(f"cas output must be True or False, not {self.output!r}")

    @property
    def unknown(self) -> bool:
        """True when the outcome is unknown (no return time)."""
        return self.ret is None


def read_op(client: int, key: Key, output: Value, call: float, ret: float | None, /) -> Op:
    """A read of ``key`` that returned ``output`` (pass ``ret=None``, ``output=None`` if
    the outcome is unknown)."""
    return Op(client, "read", key, None, output, call, ret)


def write_op(client: int, key: Key, value: Value, call: float, ret: float | None, /) -> Op:
    """A write of ``value`` to ``key`` (``ret=None``: outcome unknown)."""
    return Op(client, "write", key, value, None, call, ret)


def cas_op(
    client: int,
    key: Key,
    old: Value,
    new: Value,
    swapped: bool | None,
    call: float,
    ret: float | None,
    /,
) -> Op:
    """A compare-and-set of ``key`` from ``old`` to ``new``; ``swapped`` is its result
    (``None`` together with ``ret=None`` when the outcome is unknown)."""
    return Op(client, "cas", key, (old, new), swapped, call, ret)


@dataclass(frozen=True, slots=True)
class Result:
    """Verdict of :func:`check_history`.

    ``linearizable`` is the verdict. When it is False, ``key`` is the first key (in order
    of first appearance in the history) whose sub-history is not linearizable, ``prefix``
    is the longest sequence of that key's ops the search could linearize (in linearization
    order), ``state`` the key's value after it, and ``pending`` the ops that were candidates
    to come next (invoked before the earliest return of the ops not in ``prefix``), none of
    which the model accepts in ``state``. ``explanation`` describes this in prose (``op#N``
    is the op's 0-based position in the input to :func:`check_history`). When
    the history is linearizable, ``key`` is ``None``, ``prefix``/``pending`` are empty and
    ``explanation`` is a one-line summary.
    """

    linearizable: bool
    key: Key
    explanation: str
    prefix: tuple[Op, ...] = ()
    pending: tuple[Op, ...] = ()
    state: Value = None


# --------------------------------------------------------------------------------------
# Search


@dataclass(frozen=True, slots=True)
class _Failure:
    """Deepest dead end of a failed per-key search (indices into the key's op list)."""

    prefix: list[int]
    state: Value
    candidates: list[int]
    blocker: int


def _scalar(op: Op) -> Value:
    """The input value of a read (``None``) or write op."""
    if isinstance(op.value, tuple):
        raise TypeError("a cas op has a pair of input values")
    return op.value


def _cas_args(op: Op) -> tuple[Value, Value]:
    """The ``(old, new)`` input pair of a cas op."""
    if not isinstance(op.value, tuple):
        raise TypeError("not a cas op")
    return op.value


def _step(op: Op, state: Value) -> tuple[bool, Value]:
    """The model: whether ``op`` may be linearized in ``state``, and the state after it."""
    if op.kind == "read":
        return op.ret is None or op.output == state, state
    if op.kind == "write":
        return True, _scalar(op)
    old, new = _cas_args(op)
    if state == old:
        return op.output is not False, new
    return op.output is not True, state


def _search(ops: Sequence[Op], deadline: float | None) -> _Failure | None:
    """Check one key's ops (unknown reads already removed). None if linearizable."""
    n = len(ops)
    if n == 0:
        return None
    inf = math.inf
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((inf if op.ret is None else op.ret, 1, i))
    events.sort()

    # Entries 1..2n in event order; 0 is the head sentinel, tail = 2n + 1 the tail one.
    tail = 2 * n + 1
    nxt = list(range(1, tail + 2))
    prv = list(range(-1, tail))
    match = [-1] * (tail + 1)  # call entry -> its return entry; -1 for returns/sentinels
    opid = [-1] * (tail + 1)
    call_entry = [0] * n
    for pos, (_, is_ret, i) in enumerate(events, start=1):
        opid[pos] = i
        if is_ret:
            match[call_entry[i]] = pos
        else:
            call_entry[i] = pos

    kinds = [_KIND_CODE[op.kind] for op in ops]
    arg_a: list[Value] = []
    arg_b: list[Value] = []
    outs: list[Value | bool] = []
    for op in ops:
        if isinstance(op.value, tuple):
            arg_a.append(op.value[0])
            arg_b.append(op.value[1])
        else:
            arg_a.append(op.value)
            arg_b.append(None)
        outs.append(op.output)
    bits = [1 << i for i in range(n)]

    state: Value = None
    linearized = 0
    cache: set[tuple[int, Value]] = set()
    stack_entry: list[int] = []
    stack_state: list[Value] = []
    best_depth = -1
    failure: _Failure | None = None
    backtracks = 0

    e = nxt[0]
    while nxt[0] != tail:
        m = match[e]
        if m >= 0:  # a call entry: try to linearize its op now
            i = opid[e]
            k = kinds[i]
            new: Value
            if k == _READ:
                ok = state == outs[i]
                new = state
            elif k == _WRITE:
                ok = True
                new = arg_a[i]
            elif state == arg_a[i]:
                ok = outs[i] is not False
                new = arg_b[i]
            else:
                ok = outs[i] is not True
                new = state
            if ok:
                nl = linearized | bits[i]
                ck = (nl, new)
                if ck not in cache:
                    cache.add(ck)
                    stack_entry.append(e)
                    stack_state.append(state)
                    state = new
                    linearized = nl
                    pe = prv[e]  # lift the call entry, then its return entry
                    ne = nxt[e]
                    nxt[pe] = ne
                    prv[ne] = pe
                    pm = prv[m]
                    nm = nxt[m]
                    nxt[pm] = nm
                    prv[nm] = pm
                    e = nxt[0]
                    continue
            e = nxt[e]
        else:  # a return entry: its op must come before anything later -> backtrack
            depth = len(stack_entry)
            if depth > best_depth:
                best_depth = depth
                candidates = []
                x = nxt[0]
                while match[x] >= 0:
                    candidates.append(opid[x])
                    x = nxt[x]
                failure = _Failure(
                    prefix=[opid[c] for c in stack_entry],
                    state=state,
                    candidates=candidates,
                    blocker=opid[e],
                )
            if not depth:
                return failure
            backtracks += 1
            if deadline is not None and not backtracks & 0x3FF and time.monotonic() > deadline:
                raise CheckTimeoutError("linearizability check timed out")
            e = stack_entry.pop()
            state = stack_state.pop()
            m = match[e]
            linearized ^= bits[opid[e]]
            pm = prv[m]  # unlift the return entry, then the call entry
            nm = nxt[m]
            nxt[pm] = m
            prv[nm] = m
            pe = prv[e]
            ne = nxt[e]
            nxt[pe] = e
            prv[ne] = e
            e = nxt[e]
    return None


def check_history(ops: Iterable[Op], *, timeout: float | None = None, context: int = 10) -> Result:
    """Decide whether ``ops`` is linearizable with respect to the key-value model.

    Each key's sub-history is checked independently, in order of the key's first
    appearance in ``ops``; the check stops at the first key that is not linearizable.
    ``timeout`` (seconds, wall clock) bounds the whole check: :class:`CheckTimeoutError`
    is raised when it is exceeded. ``context`` is how many of the last ops of the
    linearizable prefix the explanation lists. ``ops`` is not modified.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    by_key: dict[Key, list[tuple[int, Op]]] = {}
    total = 0
    for index, op in enumerate(ops):
        if not isinstance(op, Op):
            raise TypeError(f"expected Op, got {type(op).__name__}")
        total += 1
        group = by_key.setdefault(op.key, [])
        if op.kind == "read" and op.ret is None:
            continue  # a read with unknown result constrains nothing
        group.append((index, op))
    for key, group in by_key.items():
        if deadline is not None and time.monotonic() > deadline:
            raise CheckTimeoutError("linearizability check timed out")
        key_ops = [op for _, op in group]
        failure = _search(key_ops, deadline)
        if failure is not None:
            return _failure_result(key, group, failure, context)
    return Result(
        linearizable=True,
        key=None,
        explanation=f"linearizable: {total} ops on {len(by_key)} key(s)",
    )


# --------------------------------------------------------------------------------------
# Explanations


def _fmt_value(v: Value) -> str:
    if v is None:
        return "nil"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def _fmt_key(key: Key) -> str:
    return "<default>" if key is None else json.dumps(key)


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "?"
    if isinstance(t, int) or (isinstance(t, float) and t.is_integer() and abs(t) < 1e15):
        return str(int(t))
    return f"{t:.6f}"


def describe_op(op: Op) -> str:
    """A one-line human description of ``op`` (client, operation, result, interval)."""
    if op.kind == "read":
        what = "read" if op.ret is None else f"read -> {_fmt_value(op.output)}"
    elif op.kind == "write":
        what = f"write {_fmt_value(_scalar(op))}"
    else:
        old, new = _cas_args(op)
        what = f"cas {_fmt_value(old)}->{_fmt_value(new)}"
        if op.ret is not None:
            what += " ok" if op.output else " fail"
    if op.ret is None:
        what += " (outcome unknown)"
    return f"client {op.client} {what} [{_fmt_time(op.call)}, {_fmt_time(op.ret)}]"


def _rejection(op: Op, state: Value) -> str:
    ok, _ = _step(op, state)
    if ok:
        return "allowed here, but no continuation from it linearizes"
    if op.kind == "read":
        return f"it read {_fmt_value(op.output)}, but the value is {_fmt_value(state)}"
    old, _new = _cas_args(op)
    if op.output:
        return f"it swapped, but the value is {_fmt_value(state)}, not {_fmt_value(old)}"
    return f"it failed, but the value is {_fmt_value(state)}, equal to old"


def _failure_result(
    key: Key, group: list[tuple[int, Op]], failure: _Failure, context: int
) -> Result:
    prefix = [group[i] for i in failure.prefix]
    pending = [group[i] for i in failure.candidates]
    blocker_index, blocker = group[failure.blocker]
    lines = [
        f"key {_fmt_key(key)}: not linearizable ({len(group)} ops on this key, "
        "times are [call, return])",
        f"longest linearizable prefix: {len(prefix)} of {len(group)} ops",
    ]
    state: Value = None
    states: list[Value] = []
    for _, op in prefix:
        state = _step(op, state)[1]
        states.append(state)
    shown = max(0, len(prefix) - max(context, 0))
    if shown:
        lines.append(f"  ... {shown} earlier ops omitted")
    for (index, op), after in list(zip(prefix, states, strict=True))[shown:]:
        lines.append(f"  op#{index} {describe_op(op)} => {_fmt_value(after)}")
    lines.append(f"value after the prefix: {_fmt_value(failure.state)}")
    lines.append(
        f"stuck: the next op must be one invoked before op#{blocker_index} returned (at "
        f"{_fmt_time(blocker.ret)}), but none of these {len(pending)} can be linearized next:"
    )
    for index, op in pending:
        lines.append(f"  op#{index} {describe_op(op)}: {_rejection(op, failure.state)}")
    return Result(
        linearizable=False,
        key=key,
        explanation="\n".join(lines),
        prefix=tuple(op for _, op in prefix),
        pending=tuple(op for _, op in pending),
        state=failure.state,
    )


# --------------------------------------------------------------------------------------
# Text format

_PREFIX = "INFO  jepsen.util - "
_PREFIX_RE = re.compile(r"INFO\s+jepsen\.util\s+-\s+")
_STR = r'"(?:[^"\\]|\\.)*"'
_ATOM = rf"(?:nil|-?\d+|{_STR})"
_EVENT_RE = re.compile(
    rf"(?P<process>\d+)\s+:(?P<type>invoke|ok|fail|info)\s+:(?P<f>\S+)\s+"
    rf"(?P<value>{_ATOM}|\[\s*{_ATOM}\s+{_ATOM}\s*\]|:[\w.\-]+)"
    rf"(?:\s+(?P<key>{_STR}|[^\s\"]\S*))?\s*"
)
_PAIR_RE = re.compile(rf"\[\s*({_ATOM})\s+({_ATOM})\s*\]")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_./:@+=\-]+")


def _parse_atom(text: str, lineno: int) -> Value:
    if text == "nil":
        return None
    if text.startswith('"'):
        try:
            v = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HistoryFormatError(f"bad string literal {text}: {exc}", lineno) from exc
        assert isinstance(v, str)
        return v
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    raise HistoryFormatError(f"expected nil, an integer or a string, got {text!r}", lineno)


def _parse_pair(text: str, lineno: int) -> tuple[Value, Value]:
    m = _PAIR_RE.fullmatch(text)
    if m is None:
        raise HistoryFormatError(f"expected a pair [OLD NEW], got {text!r}", lineno)
    return _parse_atom(m.group(1), lineno), _parse_atom(m.group(2), lineno)


def _parse_key(text: str | None, lineno: int) -> Key:
    if text is None:
        return None
    if text.startswith('"'):
        return str(_parse_atom(text, lineno))
    return text


@dataclass(slots=True)
class _Invoke:
    kind: OpKind
    key: Key
    value: Value | tuple[Value, Value]
    lineno: int


def parse_history(text: str) -> list[Op]:
    """Parse a history in the text format (see the module docstring) into ops.

    Ops are returned in invoke order, with ``call``/``ret`` = 1-based line numbers and
    ``ret=None`` for unknown outcomes (``:info``, ``:fail :read :timed-out``, no
    completion by the end). Failed writes and failed reads other than ``:timed-out`` are
    dropped; a failed cas has ``output=False``. Raises :class:`HistoryFormatError` on a
    malformed event line.
    """
    ops: list[Op] = []
    outstanding: dict[int, _Invoke] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pm = _PREFIX_RE.match(line)
        if pm is not None:
            line = line[pm.end() :]
            if not line[:1].isdigit():
                continue  # e.g. ":nemesis :info :start nil"
        elif not line[:1].isdigit():
            continue  # another logger's line
        m = _EVENT_RE.fullmatch(line)
        if m is None:
            raise HistoryFormatError(f"cannot parse event {line!r}", lineno)
        process = int(m.group("process"))
        typ = m.group("type")
        f = m.group("f")
        if f not in _KIND_CODE:
            raise HistoryFormatError(f"unsupported operation :{f}", lineno)
        kind: OpKind = _KINDS[_KIND_CODE[f]]
        value_text = m.group("value")
        key = _parse_key(m.group("key"), lineno)
        if typ == "invoke":
            if process in outstanding:
                prior = outstanding[process].lineno
                raise HistoryFormatError(
                    f"process {process} invokes while its op from line {prior} is outstanding",
                    lineno,
                )
            value: Value | tuple[Value, Value]
            if kind == "read":
                value = None
            elif kind == "write":
                value = _parse_atom(value_text, lineno)
            else:
                value = _parse_pair(value_text, lineno)
            outstanding[process] = _Invoke(kind, key, value, lineno)
            continue
        inv = outstanding.pop(process, None)
        if inv is None:
            raise HistoryFormatError(f"process {process} completes an op it never invoked", lineno)
        if inv.kind != kind:
            raise HistoryFormatError(
                f"completion :{kind} does not match the :{inv.kind} invoked at line {inv.lineno}",
                lineno,
            )
        if m.group("key") is not None and key != inv.key:
            raise HistoryFormatError(
                f"completion key {_fmt_key(key)} differs from the invoke's {_fmt_key(inv.key)}",
                lineno,
            )
        if typ == "ok":
            output: Value | bool = None
            if kind == "read":
                output = _parse_atom(value_text, lineno)
            elif kind == "cas":
                output = True
            ops.append(Op(process, kind, inv.key, inv.value, output, inv.lineno, lineno))
        elif typ == "fail":
            if kind == "cas":
                ops.append(Op(process, kind, inv.key, inv.value, False, inv.lineno, lineno))
            elif kind == "read" and value_text == ":timed-out":
                # README: a timed-out read "can be treated as an operation whose result is
                # unknown"; it constrains nothing either way.
                ops.append(Op(process, kind, inv.key, None, None, inv.lineno, None))
            # any other failed read or write did not happen: drop it
        else:  # info
            ops.append(Op(process, kind, inv.key, inv.value, None, inv.lineno, None))
    for process, inv in outstanding.items():
        ops.append(Op(process, inv.kind, inv.key, inv.value, None, inv.lineno, None))
    ops.sort(key=lambda op: op.call)
    return ops


def parse_file(path: str | Path) -> list[Op]:
    """Read and :func:`parse_history` the file at ``path`` (UTF-8)."""
    return parse_history(Path(path).read_text(encoding="utf-8"))


def check_file(path: str | Path, *, timeout: float | None = None) -> Result:
    """:func:`check_history` of :func:`parse_file`."""
    return check_history(parse_file(path), timeout=timeout)


def _format_input(op: Op) -> str:
    if isinstance(op.value, tuple):
        return f"[{_fmt_value(op.value[0])} {_fmt_value(op.value[1])}]"
    return _fmt_value(op.value)


def _format_line(op: Op, typ: str, value: str) -> str:
    cols = [str(op.client), f":{typ}", f":{op.kind}", value]
    if op.key is not None:
        cols.append(op.key if _BARE_KEY_RE.fullmatch(op.key) else json.dumps(op.key))
    return _PREFIX + "\t".join(cols)


def format_history(ops: Iterable[Op]) -> str:
    """Render ops in the text format (see the module docstring); :func:`parse_history`
    of the result yields the same ops in invoke order with times renumbered to line
    numbers, preserving which ops overlap (unknown reads come back as unknown reads).

    Contract: ``client`` ids are non-negative and each client's ops are sequential: an
    op with a known return returns strictly before the client's next call (ops after an
    unknown op are allowed). Otherwise ``ValueError`` is raised.
    """
    op_list = list(ops)
    by_client: dict[int, list[int]] = {}
    for index, op in enumerate(op_list):
        if op.client < 0:
            raise ValueError(f"client id must be non-negative: {op.client}")
        by_client.setdefault(op.client, []).append(index)
    # (time, rank, index, line): ranks order :info < :invoke < completion at equal times.
    events: list[tuple[float, int, int, str]] = []
    for indices in by_client.values():
        indices.sort(key=lambda i: op_list[i].call)
        for pos, index in enumerate(indices):
            op = op_list[index]
            events.append((op.call, 1, index, _format_line(op, "invoke", _format_input(op))))
            later = op_list[indices[pos + 1]] if pos + 1 < len(indices) else None
            if op.ret is None:
                when = math.inf if later is None else later.call
                rank = 3 if later is None else 0
                events.append((when, rank, index, _format_line(op, "info", _format_input(op))))
                continue
            if later is not None and not op.ret < later.call:
                raise ValueError(
                    f"client {op.client} has overlapping ops: {describe_op(op)} and "
                    f"{describe_op(later)}"
                )
            if op.kind == "read":
                text = _fmt_value(op.output)
                typ = "ok"
            else:
                text = _format_input(op)
                typ = "fail" if op.output is False else "ok"
            events.append((op.ret, 2, index, _format_line(op, typ, text)))
    events.sort(key=lambda ev: ev[:3])
    return "".join(line + "\n" for *_, line in events)


def write_history(path: str | Path, ops: Iterable[Op]) -> None:
    """Write :func:`format_history` of ``ops`` to ``path`` (UTF-8)."""
    Path(path).write_text(format_history(ops), encoding="utf-8")
