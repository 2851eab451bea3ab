"""Jepsen-style chaos testing of real raftd daemons: ``scripts/chaos``.

What a run does
===============

1. **Cluster.** ``--nodes`` daemons (default 5), each a ``raftd run`` process in its own
   network namespace on one bridge (:class:`~harness.netns.Topology`), with static
   ``--peer`` lists of the bridge addresses, ``--discovery none``, identities created up
   front, the ``chaos`` preset (``local`` timings, a snapshot every 200 entries keeping 50:
   lagging nodes need snapshot installs) via ``RAFTD_PRESET``, and with ``--encrypt`` a
   shared key (a fresh 0600 hex key file, ``--key-file`` on every node). Data dirs are
   ``<run>/data/<node>`` (removed after the run unless ``--keep``), logs
   ``<run>/logs/<node>.log`` (always kept; the harness notes its actions in them, lines
   starting ``--- chaos:``). ``--preset`` picks another preset; the hidden knob
   ``RAFTD_CHAOS_DAEMON_CONFIG=<file.toml>`` passes ``--config <file.toml>`` to every
   daemon (any ``raftd run`` setting, without changing the harness). See
   :mod:`harness.chaos.cluster`.
2. **Load.** ``--clients`` threads (default 10) for ``--duration`` seconds; each op goes
   to a random node's unix API socket (the harness stays in the root namespace: socket
   files work across network namespaces). 40% linearizable reads, 30% writes, 30% cas on
   ``--keys`` keys (default 5), integer values unique per write. Daemon deadline 2 s per
   op, the harness waits 3 s at most. See :mod:`harness.chaos.workload`.
3. **Nemesis.** One fault at a time, seeded: ``kill``, ``kill-leader``, ``pause``,
   ``partition-leader``, ``partition-half``, ``partition-bridge``, ``kill-all``,
   ``membership``, ``transfer``, ``snapshot``, ``slow-disk`` (``--nemesis``; all by
   default; ``slow-disk`` puts every data dir on a slowfs FUSE mount and is left out,
   with a note, when FUSE cannot be used here). Quiet
   1-2.5 s, then the fault held 2-5 s (``--quiet-time``, ``--hold``), then healed, then a
   wait (30 s at most) for the cluster to recover before the next quiet period. See
   :mod:`harness.chaos.nemesis`; partitions are described in
   :mod:`harness.chaos.cluster` (link down for isolating a node, blackhole routes in
   both namespaces for arbitrary and partial partitions).
4. **Recovery.** Clients and nemesis stop; every fault is healed (links up, routes
   removed, SIGCONT, dead nodes started); then *every* daemon is restarted (SIGTERM, kill
   -9 after 10 s); once a leader exists, nodes missing from the membership are added back
   as voters; then the harness waits until every node answers and agrees on one leader
   whose membership has every node as a voter (90 s at most: else an anomaly).
5. **Final reads.** A linearizable read of every key through every node, retried until it
   succeeds (90 s at most: else an anomaly). They are part of the history.
6. **Convergence.** Once every node reports the same store revision, a full stale range
   read on each node; keys, values, create/mod revisions and versions must be identical.

Outcomes are recorded Jepsen style (:mod:`harness.chaos.history`): an invoke and a
completion per op; ``ok``; ``fail`` when the op certainly had no effect (a cas whose
comparison failed; a write refused with an error whose ``indeterminate`` flag is false,
e.g. no leader within the deadline, or the socket refused the connection); ``info`` when
unknown (harness timeout, connection lost mid-request, ``indeterminate`` errors), after
which the client continues under a new process id.

Checks (:mod:`harness.chaos.checks`)
===========================================

* **Linearizability** of the whole history, final reads included, key by key
  (:mod:`raftd.testing.linearizability`). Each non-linearizable key is one anomaly.
* **Lost writes**: an acknowledged write (an ``ok`` write or a cas that swapped) is lost
  when its value is not the key's final value although it was invoked after the write of
  the final value returned (so nothing could have overwritten it). A final value nobody
  wrote (a *phantom*) is an anomaly. Both are independent of the checker (which, thanks to
  the final reads, would also flag them).
* **Convergence**: each differing node state, or no convergence in time, is an anomaly.
* **Recovery**: no stable leader, or a final read impossible, after healing is an anomaly.

Availability
============

An op is *answered* when the cluster gave a definite result: ``ok``, or a cas comparison
that failed. An **unavailability window** is a maximal interval of the load phase
``[load start, load end]`` during which no op was answered on any client, longer than
1 s: the gaps between consecutive answered completions (with the load start and end as
bounds) that exceed 1 s. **U** (the last line) is the sum of the windows' lengths over all
runs. Per nemesis kind, a fault's *epoch* runs from the fault's start to the next fault's
start (so it includes healing and recovery; the time before the first fault is kind
``none``); the table gives the faults, the ops *invoked* in the kind's epochs, the
fraction answered, and the summed and longest unavailability windows attributed to them
(a window goes to the epoch it overlaps most).

Output
======

``--out DIR`` (default ``runs/chaos-<timestamp>``): ``summary.json`` (everything below,
per run and aggregated), and per run ``run-<i>/``: ``history.txt`` (the checker's
format: ``scripts/check-linearizable run-<i>/history.txt`` re-checks it), ``ops.jsonl``
(every op with node, outcome, error and times), ``nemesis.jsonl`` (every nemesis event),
``result.json``, ``logs/``. The last line printed is::

    R runs, A anomalies, L lost writes, U unavailable seconds

and the exit status is 1 if A or L is not zero (2: no network namespaces here).

Run ``i`` (1-based) of a campaign uses seed ``--seed + i - 1``; the seed decides every
choice of the clients and the nemesis, not the timing of the cluster's reactions.
"""

from harness.chaos import checks
from harness.chaos.checks import *  # noqa: F403 (the names checks.__all__ lists)
from harness.chaos.history import Clock, OpRecord, Recorder, checker_ops

__all__ = ["Clock", "OpRecord", "Recorder", "checker_ops"]
__all__ += checks.__all__
