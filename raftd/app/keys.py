"""The daemon's shared key ring: ``--key-file`` (or ``$RAFTD_KEY``), plus the optional
``--next-key-file`` and ``--previous-key-file`` used during a key rotation.

Rotation without downtime (README, Security):

1. Put the new key on every node as ``--next-key-file`` and reload each
   (``raftd reload`` or SIGHUP). Nodes now accept both keys; each sends under the newest
   key its peer advertises.
2. Make the new key the ``--key-file`` and the old one ``--previous-key-file``; reload.
3. Remove ``--previous-key-file``; reload. The old key is retired.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from raftd.app.config import DaemonConfig
from raftd.security.keys import KEY_ENV_VAR, KeyRing, load_key, load_key_file


def load_ring(cfg: DaemonConfig, env: Mapping[str, str] = os.environ) -> KeyRing | None:
    """The configured ring, or None without a key. Raises KeyLoadError (whose message
    names the file and never contains key material)."""
    current = load_key(cfg.key_file, env_value=env.get(KEY_ENV_VAR) or None)
    if current is None:
        if cfg.next_key_file or cfg.previous_key_file:
            from raftd.security.keys import KeyLoadError

            raise KeyLoadError("next/previous key files need a current key (--key-file)")
        return None
    nxt = load_key_file(cfg.next_key_file) if cfg.next_key_file else None
    prev = load_key_file(cfg.previous_key_file) if cfg.previous_key_file else None
    return KeyRing(current, next=nxt, previous=prev)
