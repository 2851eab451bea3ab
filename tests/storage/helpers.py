"""Small helpers shared by the storage and KV tests."""

from __future__ import annotations

import os
import random


def seed_from_env() -> int:
    """A fresh random seed, or ``RAFTD_SEED`` to replay a failure. Printed either way."""
    env = os.environ.get("RAFTD_SEED")
    seed = int(env) if env else random.randrange(1 << 32)
    print(f"seed={seed} (replay with RAFTD_SEED={seed})")
    return seed
