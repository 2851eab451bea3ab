"""``raftd txn``: the transaction input parser (JSON or the simple syntax) and the command."""

from __future__ import annotations

from typing import Any

import click

from raftd.cli import base


def parse_txn(text: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Parse ``raftd txn`` input: JSON, or the simple syntax (see ``raftd txn --help``).
    Raises ValueError with the offending line."""
    import json
    import re
    import shlex

    from raftd.client import compare, op_delete, op_delete_range, op_get, op_put

    def op_of(words: list[str], where: str) -> Any:
        if not words:
            raise ValueError(f"{where}: empty operation")
        verb, args = words[0].lower(), words[1:]
        if verb == "put" and len(args) == 2:
            return op_put(base.to_bytes(args[0]), base.to_bytes(args[1]))
        if verb == "get" and len(args) in (1, 2):
            return op_get(base.to_bytes(args[0]), base.to_bytes(args[1]) if len(args) == 2 else b"")
        if verb in ("del", "delete") and len(args) == 1:
            return op_delete(base.to_bytes(args[0]))
        if verb in ("del", "delete") and len(args) == 2:
            return op_delete_range(base.to_bytes(args[0]), base.to_bytes(args[1]))
        raise ValueError(f"{where}: expected put KEY VALUE | get KEY [END] | del KEY [END]")

    stripped = text.strip()
    if stripped.startswith("{"):
        doc = json.loads(stripped)
        cmps = []
        for i, c in enumerate(doc.get("compare", [])):
            target = c.get("target", "value")
            operand = c.get("value") if target == "value" else int(c.get("value", 0))
            if target == "value" and not isinstance(operand, str):
                raise ValueError(f"compare {i}: value must be a string")
            cmps.append(compare(base.to_bytes(c["key"]), target, c.get("op", "="), operand))

        def ops(items: list[dict[str, Any]], name: str) -> list[Any]:
            out = []
            for i, item in enumerate(items):
                ((verb, a),) = item.items()
                words = [verb, a["key"]]
                if verb == "put":
                    words.append(a.get("value", ""))
                elif a.get("range_end"):
                    words.append(a["range_end"])
                out.append(op_of(words, f"{name} {i}"))
            return out

        return cmps, ops(doc.get("success", []), "success"), ops(doc.get("failure", []), "failure")

    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            if sections[-1]:
                sections.append([])
            continue
        if not line.lstrip().startswith("#"):
            sections[-1].append(line)
    if sections and not sections[-1]:
        sections.pop()
    if len(sections) > 3:
        raise ValueError("txn: at most three blank-line separated sections")
    while len(sections) < 3:
        sections.append([])
    cre = re.compile(
        r'\s*(value|version|create|mod)\(\s*("(?:[^"\\]|\\.)*"|\S+?)\s*\)\s*(=|==|!=|>|<)\s*(.+?)\s*$'
    )
    cmps = []
    for line in sections[0]:
        m = cre.fullmatch(line)
        if m is None:
            raise ValueError(f'compare {line!r}: expected TARGET("KEY") OP OPERAND')
        target, key, op, operand = m.groups()
        key = shlex.split(key)[0]
        value: str | int = shlex.split(operand)[0] if target == "value" else int(operand)
        cmps.append(
            compare(
                base.to_bytes(key),
                target,
                op,
                base.to_bytes(value) if isinstance(value, str) else value,
            )
        )
    succ = [op_of(shlex.split(ln), f"success {ln!r}") for ln in sections[1]]
    fail = [op_of(shlex.split(ln), f"failure {ln!r}") for ln in sections[2]]
    return cmps, succ, fail


@base.main.command("txn")
@click.option(
    "--file", "-f", "path", type=click.File("r"), default="-", help="Input (default stdin)."
)
@base.client_options
def txn_cmd(opts: base.Ctx, path: Any) -> int:
    """Run a transaction read from stdin; exit 0 if the compares held, 1 if not.

    \b
    Simple syntax: three sections separated by blank lines: compares, then the
    operations run if all hold, then the ones run otherwise:
        value("k") = "v1"
        mod("counter") < 10
        <blank line>
        put k v2
        del old
        <blank line>
        get k
    Compare targets: value, version, create, mod (ints); operators = != > <.
    Operations: put KEY VALUE | get KEY [RANGE_END] | del KEY [RANGE_END].

    \b
    JSON: {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v1"}],
           "success": [{"put": {"key": "k", "value": "v2"}}],
           "failure": [{"get": {"key": "k"}}]}
    """
    try:
        cmps, succ, fail = parse_txn(path.read())
    except (ValueError, KeyError, TypeError) as exc:
        click.echo(f"raftd: bad transaction: {exc}", err=True)
        return base.EXIT_USAGE
    with opts.client() as c:
        r = c.txn(cmps, succ, fail)
    if opts.json:
        out: list[Any] = []
        for x in r.responses:
            if hasattr(x, "kvs"):
                out.append({"kvs": [kv.as_dict() for kv in x.kvs]})
            elif hasattr(x, "deleted"):
                out.append({"deleted": x.deleted})
            else:
                out.append({"put": True})
        base.emit(opts, {"succeeded": r.succeeded, "revision": r.revision, "responses": out})
    else:
        click.echo("SUCCESS" if r.succeeded else "FAILURE")
        for x in r.responses:
            if hasattr(x, "kvs"):
                for kv in x.kvs:
                    click.echo(f"{base.to_text(kv.key)}\t{base.to_text(kv.value)}")
            elif hasattr(x, "deleted"):
                click.echo(f"deleted {x.deleted}")
            else:
                click.echo("OK")
    return base.EXIT_OK if r.succeeded else base.EXIT_FAILED
