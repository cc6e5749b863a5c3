"""Projections: the PostgreSQL read models of the event log and the HTTP queries over them.

Owns the read-model tables (`projections.tables`), one projector per read model
(`projections.projectors`: organizations, services, operations), the projector process that folds
`dbaas.events` into them with its tracking positions in the same transaction
(`projections.runner`), the offline rebuild with an atomic swap (`projections.rebuild`), and the
query side (`projections.queries`, the FastAPI router in `projections.api`).

May import `events`, `schemas` and `runtime`; never `commands`, `processors`, `gateway` or `cli`.
Nothing here opens a connection at import time: each process builds its clients from
`projections.settings.Settings`.
"""
