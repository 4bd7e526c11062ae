"""The ingest pipeline that every way in shares: parse → check → store → index, in batches."""
