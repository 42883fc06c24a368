"""HTTP surface: parsing, validation and serialisation; no upstream or SQLite details."""
