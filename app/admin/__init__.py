"""Operator queries behind the admin HTTP API (tenants overview, keys, usage reports)."""
