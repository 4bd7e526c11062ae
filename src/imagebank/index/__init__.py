"""The metadata index: SQLAlchemy 2 tables, Alembic migrations, and the queries.

SQLite (WAL) is the embedded default; PostgreSQL through ``IMAGEBANK_DATABASE_URL``. All SQL
lives here (STYLE.md practice 6): callers own the transaction.
"""
