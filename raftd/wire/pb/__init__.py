"""Generated protobuf modules. Do not edit: run scripts/gen-proto."""
