"""Developer tooling: the local dev stack behind scripts/stack, also used by the tests and
bench. Not part of the `imagegate` distribution, and the gateway (app/) never imports it
(tests/test_layout.py checks that)."""
