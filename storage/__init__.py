"""Everything that touches the database: engine and sessions (db), tables (models), typed
functions the app calls (repository), the hash-chained audit trail (audit), exports (export),
user management CLI (users) and alembic migrations. It imports neither engine nor gradio.
See docs/STORAGE.md."""
