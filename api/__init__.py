"""The FastAPI service (jobs API, DuckDB inspection, web page) lands with issue 6; nothing here yet."""
