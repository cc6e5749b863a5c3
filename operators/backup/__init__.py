"""Backups of tenants' services: engine dumps and logs (PostgreSQL, MariaDB, Redis), sealed
client-side and kept in object storage, restore and point-in-time recovery (see docs/backups.md)."""
