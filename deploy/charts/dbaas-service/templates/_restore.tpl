{{/*
Restore: a new service created from another service's data, .Values.restore =
{sourceTenant, sourceServiceId, sourceEngine, backupId | targetTime, sourceServiceName?,
sourcePop?, location?}. The ServiceClaim carries it as spec.restore (the PoP's dbaas operator
reads it there); where the engine operator has a restore resource it is rendered too (restore.yaml).
*/}}

{{/*
Rules values.schema.json cannot state with a message people can act on. Renders nothing, or
fails the render.
*/}}
{{- define "dbaas.restore.validate" -}}
{{- with .Values.restore -}}
{{- if ne .sourceEngine $.Values.engine -}}
{{- fail (printf "restore.sourceEngine: a %s backup cannot be restored into a %s service; restore into a service of engine %s" .sourceEngine $.Values.engine .sourceEngine) -}}
{{- end -}}
{{- if .targetTime -}}
{{- if (toDate "2006-01-02T15:04:05Z07:00" .targetTime).IsZero -}}
{{- fail (printf "restore.targetTime: %q is not a valid RFC 3339 time (e.g. 2026-01-31T12:00:00Z)" .targetTime) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ServiceClaim spec.restore, keys in a fixed order. */}}
{{- define "dbaas.restore.spec" -}}
{{- with .Values.restore -}}
sourceTenant: {{ .sourceTenant | quote }}
sourceServiceId: {{ .sourceServiceId | toString | quote }}
sourceEngine: {{ .sourceEngine | quote }}
{{- with .sourceServiceName }}
sourceServiceName: {{ . | quote }}
{{- end }}
{{- with .sourcePop }}
sourcePop: {{ . | quote }}
{{- end }}
{{- with .backupId }}
backupId: {{ . | toString | quote }}
{{- end }}
{{- with .targetTime }}
targetTime: {{ . | quote }}
{{- end }}
{{- with .location }}
location:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
YugabyteDB: RestoreJob (operator.yugabyte.io/v1alpha1) {actionType RESTORE, universe = this
service's YBUniverse, backup = the source backup's Backup CR, keyspace = this service's
database}, sync wave 2 (after the YBUniverse). Rendered only when the operator can act on it: a
backupId (RestoreJob has no point in time), a Kubernetes PoP, and the source backup's Backup CR
in the same namespace and cluster (same tenant and PoP; its name needs sourceServiceName).
Otherwise the PoP's dbaas operator restores (ysql_dump of a restored copy, or PITR).
*/}}
{{- define "dbaas.restore.yugabyte" -}}
{{- $r := .Values.restore -}}
{{- if and $r.backupId $r.sourceServiceName (ne .Values.pop "local") (eq ($r.sourcePop | default "") .Values.pop) (eq $r.sourceTenant .Values.tenant) -}}
{{- $source := printf "%s-%s" ($r.sourceServiceName | trunc 21 | trimSuffix "-") ($r.sourceServiceId | toString | sha256sum | trunc 8) -}}
apiVersion: operator.yugabyte.io/v1alpha1
kind: RestoreJob
metadata:
  name: {{ printf "%s-restore" (include "dbaas.fullname" .) | quote }}
  namespace: {{ .Release.Namespace | quote }}
  labels:
    {{- include "dbaas.labels" . | nindent 4 }}
  annotations:
    argocd.argoproj.io/sync-wave: "2"
    dbaas.io/service-claim: {{ include "dbaas.fullname" . | quote }}
spec:
  actionType: RESTORE
  universe: {{ include "dbaas.fullname" . | quote }}
  backup: {{ printf "%s-%s" $source ($r.backupId | toString | sha256sum | trunc 8) | quote }}
  keyspace: {{ include "dbaas.databaseName" . | quote }}
{{- end -}}
{{- end -}}

{{/*
No restore resource in these operators' CRDs; the PoP's dbaas operator restores into the new
service once its engine CR is ready, and reports the ServiceClaim Ready only after that.
- vitess: VitessCluster has backup locations (spec.backup) but no restore of another
  keyspace's backup; vtctldclient RestoreFromBackup / a dump load, binlog replay for a time.
- scylla: Scylla Manager restore task (sctool restore), no field in ScyllaCluster.
- dragonfly: the snapshot file is loaded (DEBUG RELOAD / RESTORE of keys); no PITR.
- aerospike: asrestore; the operator's AerospikeRestore (Aerospike Backup Service) is not used.
- mongodb: mongorestore (--oplogReplay up to the time).
*/}}
{{- define "dbaas.restore.vitess" -}}{{- end -}}
{{- define "dbaas.restore.scylla" -}}{{- end -}}
{{- define "dbaas.restore.dragonfly" -}}{{- end -}}
{{- define "dbaas.restore.aerospike" -}}{{- end -}}
{{- define "dbaas.restore.mongodb" -}}{{- end -}}
