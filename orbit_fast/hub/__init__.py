"""The hub: orbit-server's HTTP API, job runner, auth and dashboard (docs/deployment.md)."""
