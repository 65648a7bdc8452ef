"""The Refinery service: a FastAPI jobs API, DuckDB inspection of job outputs, bearer-token auth."""
