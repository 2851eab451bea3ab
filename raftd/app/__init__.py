"""The daemon: configuration, per-namespace group runtimes, the local API, the CLI."""
