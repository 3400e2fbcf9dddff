"""OpenAI Images API on the same keys, credits and storage (`base_url=<gateway>/v1`):
routes (routes.py), the parameters and what each becomes (params.py), the response
(rendering.py) and OpenAI's error shape (shape.py)."""
