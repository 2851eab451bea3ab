"""Cluster membership: ``status``, ``members``, ``member ...``, ``transfer``, ``leave``."""

from __future__ import annotations

from typing import Any

import click

from raftd.cli import base


def _members_table(members: list[Any], leader: str = "") -> str:
    lines = []
    for m in members:
        mark = "*" if m.id == leader else " "
        lines.append(f"{mark} {m.id}  {'voter' if m.voter else 'learner'}  {' '.join(m.addrs)}")
    return "\n".join(lines)


@base.main.command("status")
@base.client_options
def status_cmd(opts: base.Ctx) -> int:
    """This daemon's view of each namespace (one namespace with --namespace)."""
    with opts.client() as c:
        sts = c.status(all_namespaces=not opts.namespace_given)
    if opts.json:
        base.emit(opts, [s.as_dict() for s in sts])
        return base.EXIT_OK
    for s in sts:
        click.echo(
            f"{s.namespace}: {s.role}  term={s.term}  leader={s.leader or '-'}  "
            f"commit={s.commit}  applied={s.applied}  revision={s.revision}\n"
            f"  id {s.id}"
        )
        click.echo(_members_table(s.members, s.leader))
    return base.EXIT_OK


@base.main.command("members")
@base.client_options
def members_cmd(opts: base.Ctx) -> int:
    """List the members of the namespace (* marks the leader)."""
    with opts.client() as c:
        st = c.status()[0]
    if opts.json:
        base.emit(opts, {"leader": st.leader, "members": [m.as_dict() for m in st.members]})
    else:
        click.echo(_members_table(st.members, st.leader))
    return base.EXIT_OK


@base.main.group("member")
def member_group() -> None:
    """Change membership (one server at a time, through the leader)."""


def _member_change(opts: base.Ctx, op: str, peer_id: str, addrs: tuple[str, ...]) -> int:
    with opts.client() as c:
        fn = getattr(c, op)
        members = fn(peer_id, addrs) if op in ("add_voter", "add_learner") else fn(peer_id)
    if opts.json:
        base.emit(opts, [m.as_dict() for m in members])
    else:
        click.echo(_members_table(members))
    return base.EXIT_OK


@member_group.command("add")
@click.argument("peer_id")
@click.argument("addrs", nargs=-1)
@base.client_options
def member_add_cmd(opts: base.Ctx, peer_id: str, addrs: tuple[str, ...]) -> int:
    """Add PEER_ID as a voter (reachable at ADDRS multiaddrs)."""
    return _member_change(opts, "add_voter", peer_id, addrs)


@member_group.command("add-learner")
@click.argument("peer_id")
@click.argument("addrs", nargs=-1)
@base.client_options
def member_add_learner_cmd(opts: base.Ctx, peer_id: str, addrs: tuple[str, ...]) -> int:
    """Add PEER_ID as a learner (non-voting; promote it once caught up)."""
    return _member_change(opts, "add_learner", peer_id, addrs)


@member_group.command("promote")
@click.argument("peer_id")
@base.client_options
def member_promote_cmd(opts: base.Ctx, peer_id: str) -> int:
    """Promote the learner PEER_ID to voter."""
    return _member_change(opts, "promote", peer_id, ())


@member_group.command("remove")
@click.argument("peer_id")
@base.client_options
def member_remove_cmd(opts: base.Ctx, peer_id: str) -> int:
    """Remove PEER_ID from the group."""
    return _member_change(opts, "remove", peer_id, ())


@base.main.command("transfer")
@click.argument("peer_id", default="")
@base.client_options
def transfer_cmd(opts: base.Ctx, peer_id: str) -> int:
    """Move leadership to PEER_ID (default: the most caught-up other voter)."""
    with opts.client() as c:
        leader = c.transfer_leader(peer_id)
    base.emit(opts, {"leader": leader}, f"leader is now {leader}")
    return base.EXIT_OK


@base.main.command("leave")
@base.client_options
def leave_cmd(opts: base.Ctx) -> int:
    """Leave this namespace's cluster gracefully: if this daemon leads, hand leadership
    to the most caught-up voter first, then have the leader remove it. The daemon keeps
    running outside the cluster (it asks to rejoin when restarted): stop it afterwards
    to decommission it, or run it with --leave-on-shutdown."""
    import time

    from raftd.client import FailedPrecondition, Unavailable

    with opts.client() as c:
        st = c.status()[0]
        me = st.id
        if me not in {m.id for m in st.members}:
            base.emit(opts, {"left": False, "member": False}, f"{me} is not a member")
            return base.EXIT_OK
        for attempt in range(5):
            try:
                if c.status()[0].role == "leader":
                    c.transfer_leader("")
                members = c.remove(me)
                break
            except (FailedPrecondition, Unavailable):
                if attempt == 4:
                    raise
                time.sleep(0.5)
    base.emit(opts, {"left": True, "members": [m.as_dict() for m in members]}, f"{me} left")
    return base.EXIT_OK
