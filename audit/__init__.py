"""The DuckDB audit log: its schema, the writer, and the saved queries risk managers run."""

from audit.log import AuditLog, SCHEMA_VERSION

__all__ = ["AuditLog", "SCHEMA_VERSION"]
