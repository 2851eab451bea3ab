"""Generated etcd v3 protobuf modules. Do not edit: run scripts/gen-proto."""
