"""The audit trail: Loopline's topics written to a SQL database (SQLite embedded, PostgreSQL by URL).

* :mod:`.db` — one small connection wrapper over ``sqlite3`` and psycopg 3, selected by URL;
* :mod:`.migrations` — numbered, versioned schema migrations (``schema_migrations`` table);
* :mod:`.rows` — decoded records -> table rows (pure functions, one row per stable id);
* :mod:`.sink` — the consumer loop: batched idempotent inserts, offsets committed after the rows;
* :mod:`.queries` — the documented questions (history of an event, CSV export);
* :mod:`.cli` — ``loopline audit-sink`` and ``loopline audit history|export``.
"""
from __future__ import annotations

__all__ = ["cli", "db", "migrations", "queries", "rows", "sink"]
