"""``python -m raftd.cli ...`` is the ``raftd`` command."""

from raftd.cli import main

main()
