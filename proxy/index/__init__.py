"""The live index: folders of documents in one SQLite file, kept current."""
