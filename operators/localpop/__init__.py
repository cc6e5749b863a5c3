"""The local PoP's provisioning: tenants' databases on the servers that the local platform runs
in place of each engine (YugabyteDB → PostgreSQL, Vitess → MariaDB, DragonflyDB → Redis).

Owns: naming a service's database, user and key prefix; creating and dropping them
idempotently; the credentials handed back to the tenant. The agent that reacts to ServiceClaims
for PoP ``local`` calls it with admin connection parameters as plain values.
May import: ``runtime`` and the database clients (psycopg, PyMySQL, redis) — never the domain
packages (commands, events, processors, projections).
"""
