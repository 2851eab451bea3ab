"""Wire formats: protobuf <-> core dataclasses (``raft``) and length-delimited frames
(``framing``). Generated protobuf modules live in ``raftd.wire.pb`` (scripts/gen-proto)."""
