"""Production-only plumbing: task resources, Dataflow options, BigQuery clients, Model Registry upload.

Nothing here talks to a cloud at import time, and credentials always come from Application
Default Credentials or the job's service account.
"""
