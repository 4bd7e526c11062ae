"""The REST API (FastAPI): ``create_app(runtime)``; ``imagebank serve`` runs it."""
