{{/*
DragonflyDB (dragonflydb/dragonfly-operator, dragonflydb.io/v1alpha1): no backup resource. The
Dragonfly CR has only a snapshot schedule and directory (spec.snapshot.cron, .dir), a setting of
the service itself. The PoP's dbaas operator takes a snapshot (SAVE) of the service, seals and
uploads it, and reports it on the DatabaseBackup. Dragonfly has no point-in-time recovery.
*/}}
{{- define "backup.engine.dragonfly" -}}
{{- end -}}
