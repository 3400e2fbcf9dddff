"""Metrics, structured logs with request ids, and the middleware that ties them to requests."""
