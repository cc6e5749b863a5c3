"""Backups of tenants' services: engine dumps and logs, sealed client-side and kept in object
storage (see docs/backups.md)."""
