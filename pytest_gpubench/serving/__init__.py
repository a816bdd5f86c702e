"""Serving: an LLM server's lifecycle (launch, readiness, logs, watchdog, failure classes) for one cell."""
