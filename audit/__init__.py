"""The DuckDB audit log: its schema, the writer, and the saved queries risk managers run."""

from audit.log import SCHEMA_VERSION, AuditLog

__all__ = ["AuditLog", "SCHEMA_VERSION"]
