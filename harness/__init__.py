"""Harnesses and checks that run against a raftd checkout; not part of the wheel."""
