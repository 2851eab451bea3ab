"""Compose clusters without Docker: the compose files parsed and run in network namespaces."""
