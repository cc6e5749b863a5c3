{{/*
Vitess (planetscale/vitess-operator, planetscale.com/v2): no one-shot backup resource.
VitessBackup objects are the operator's inventory of finished backups (written by the operator,
not requested) and VitessBackupSchedule is a schedule (the control plane schedules instead; both
would fire). The PoP's dbaas operator takes the backup with `vtctldclient Backup` against a
tablet of the service's keyspace and reports it on the DatabaseBackup.
*/}}
{{- define "backup.engine.vitess" -}}
{{- end -}}
