"""The extract stage: BigQuery Standard SQL over a time window, run on BigQuery or (transpiled) on DuckDB."""
