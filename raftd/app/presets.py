"""The ``--preset`` choices: the timing presets of :mod:`raftd.runtime.presets`, which
live beside the group runtime they drive; the app and its tools name them from here."""

from raftd.runtime.presets import PRESETS, Preset

__all__ = ["PRESETS", "Preset"]
