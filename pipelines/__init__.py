"""The DAG and the commands that compile it and run it locally, on Vertex AI or on a KFP host."""
