-- The schema registry keeps its schemas in PostgreSQL (as `dbaas stack up` does).
CREATE DATABASE registry OWNER dbaas;
ALTER ROLE dbaas REPLICATION;
