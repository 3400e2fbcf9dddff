"""Periodic and operator clean-up across the ledger, the database and the image store:
the expired-hold sweeper and the orphaned-object scan. It may import storage, credits and
db; they never import it."""
