"""The live index: folders of documents in a SQLite file or a PostgreSQL database, kept current
as files are saved, moved and deleted."""
