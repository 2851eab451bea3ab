"""Test and benchmark harnesses: kept in the repository, not shipped in the wheel."""
