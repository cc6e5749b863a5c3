"""Backups, restore and point-in-time recovery of the local PoP's services."""
