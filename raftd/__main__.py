"""``python -m raftd ...`` is the ``raftd`` command."""

from raftd.cli import main

if __name__ == "__main__":
    main()
