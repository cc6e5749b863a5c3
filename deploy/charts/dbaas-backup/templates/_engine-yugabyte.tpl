{{/*
YugabyteDB (yugabyte/yugabyte-k8s-operator, operator.yugabyte.io/v1alpha1): one StorageConfig
(wave 2) and one Backup (wave 3) per backup, both named after the backup.
- StorageConfig: config_type STORAGE_S3, data.BACKUP_LOCATION s3://<bucket>/<prefix> (so YBA
  writes under this backup's prefix), data.AWS_HOST_BASE + PATH_STYLE_ACCESS for an
  S3-compatible endpoint, data.USE_IAM or data.AWS_ACCESS_KEY_ID + awsSecretAccessKeySecret.
- Backup: backupType PGSQL_TABLE_TYPE (the services are YSQL only), universe = the service's
  YBUniverse, keyspace = its database, storageConfig = the StorageConfig above, sse.
Deleting the Backup (file removed: deletion or retention) makes YBA delete the stored backup;
Argo CD prunes higher waves first, so the Backup goes before its StorageConfig.
Point-in-time recovery has no field here (YugabyteDB's only switch is
BackupSchedule.enablePointInTimeRestore, a schedule, never rendered): the PoP's dbaas operator
acts on DatabaseBackup.spec.pitr.
*/}}
{{- define "backup.engine.yugabyte" -}}
{{- $store := .Values.objectStore | default dict -}}
{{- $endpoint := .Values.destination.endpoint | default "" -}}
apiVersion: operator.yugabyte.io/v1alpha1
kind: StorageConfig
metadata:
  {{- include "backup.engineMetadata" (list . 2) | nindent 2 }}
spec:
  config_type: STORAGE_S3
  data:
    BACKUP_LOCATION: {{ include "backup.s3Location" . | quote }}
    {{- if $endpoint }}
    AWS_HOST_BASE: {{ regexReplaceAll "^https?://" $endpoint "" | trimSuffix "/" | quote }}
    PATH_STYLE_ACCESS: true
    {{- end }}
    {{- if $store.accessKeyId }}
    AWS_ACCESS_KEY_ID: {{ $store.accessKeyId | quote }}
    {{- else }}
    USE_IAM: true
    {{- end }}
  {{- if $store.secretName }}
  awsSecretAccessKeySecret:
    name: {{ $store.secretName | quote }}
  {{- end }}
---
apiVersion: operator.yugabyte.io/v1alpha1
kind: Backup
metadata:
  {{- include "backup.engineMetadata" (list . 3) | nindent 2 }}
spec:
  backupType: PGSQL_TABLE_TYPE
  universe: {{ include "backup.claimName" . | quote }}
  keyspace: {{ include "backup.databaseName" . | quote }}
  storageConfig: {{ include "backup.name" . | quote }}
  sse: {{ .Values.engines.yugabyte.sse }}
  tableByTableBackup: false
{{- end -}}
