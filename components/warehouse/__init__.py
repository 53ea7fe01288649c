"""The local warehouse: the synthetic shop, loaders for public formats and the DuckDB file they are written to."""
