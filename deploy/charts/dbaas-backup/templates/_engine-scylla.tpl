{{/*
ScyllaDB (scylladb/scylla-operator, scylla.scylladb.com/v1): no backup resource of its own.
Backups are Scylla Manager tasks listed inside the cluster, ScyllaCluster.spec.backups[] (name,
location, cron, retention, keyspace): scheduled tasks of the service's own object, so one render
per backup would rewrite the service's file and the list would grow with every backup. The
PoP's dbaas operator starts a one-shot Scylla Manager backup task (location s3:<bucket>) for the
service's keyspace and reports it on the DatabaseBackup.
*/}}
{{- define "backup.engine.scylla" -}}
{{- end -}}
