"""Use cases: what the CLI, the API and the receivers call. They combine the adapters."""
