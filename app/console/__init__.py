"""The operator console at /admin: static pages over the admin API (app.console.routes)."""
