{{/*
Names of the dbaas-backup chart. "backup.claimName" MUST equal dbaas-service's "dbaas.fullname"
for the same service (tests/gitops/test_charts.py checks it): the backup points at that claim,
and it is also the name of the service's engine CR (e.g. the YBUniverse).
*/}}
{{- define "backup.claimName" -}}
{{- printf "%s-%s" (.Values.serviceName | trunc 21 | trimSuffix "-") (.Values.serviceId | toString | sha256sum | trunc 8) -}}
{{- end -}}

{{/* "<claim name>-<sha8(backupId)>": at most 39 characters; every object of one backup has it. */}}
{{- define "backup.name" -}}
{{- printf "%s-%s" (include "backup.claimName" .) (.Values.backupId | toString | sha256sum | trunc 8) -}}
{{- end -}}

{{/* The service's database / keyspace: as dbaas-service's "dbaas.databaseName". */}}
{{- define "backup.databaseName" -}}
{{- .Values.serviceName | replace "-" "_" | trunc 31 | trimSuffix "_" -}}
{{- end -}}

{{/* Kubernetes PoPs get engine-native resources; PoP local has no engine operators. */}}
{{- define "backup.kubernetesPop" -}}
{{- if ne .Values.pop "local" }}true{{ end -}}
{{- end -}}

{{/* s3://<bucket>[/<prefix without leading or trailing slashes>] */}}
{{- define "backup.s3Location" -}}
{{- $prefix := .Values.destination.prefix | default "" | trimAll "/" -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" .Values.destination.bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.destination.bucket -}}
{{- end -}}
{{- end -}}

{{/*
Rules values.schema.json cannot state with a message people can act on; included once, by
databasebackup.yaml. Renders nothing, or fails the render.
*/}}
{{- define "backup.validate" -}}
{{- range $key, $_ := .Values.labels -}}
{{- if regexMatch "(^|[.])dbaas[.]io/" $key -}}
{{- fail (printf "labels: key %q is reserved for the platform (dbaas.io/ prefix); use another prefix" $key) -}}
{{- end -}}
{{- end -}}
{{- if and (include "backup.kubernetesPop" .) (not (hasKey .Values.destination "bucket")) -}}
{{- fail (printf "destination: PoP %s is a Kubernetes PoP and needs object storage {bucket, prefix?, endpoint?, region?}; {path} is for PoP local only" .Values.pop) -}}
{{- end -}}
{{- $store := .Values.objectStore | default dict -}}
{{- if ne (empty $store.accessKeyId) (empty $store.secretName) -}}
{{- fail "objectStore: set both accessKeyId and secretName (an access key), or neither (the engine operators' own workload identity)" -}}
{{- end -}}
{{- end -}}

{{- define "backup.labels" -}}
{{- $platform := dict
      "app.kubernetes.io/name" "database-backup"
      "app.kubernetes.io/instance" (include "backup.name" .)
      "app.kubernetes.io/part-of" "dbaas"
      "app.kubernetes.io/managed-by" "dbaas"
      "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version)
      "dbaas.io/tenant" .Values.tenant
      "dbaas.io/service-id" (toString .Values.serviceId)
      "dbaas.io/backup-id" (toString .Values.backupId)
      "dbaas.io/engine" .Values.engine
      "dbaas.io/pop" .Values.pop -}}
{{- toYaml (merge $platform (deepCopy (.Values.labels | default dict))) -}}
{{- end -}}

{{/*
metadata of an engine-native object of this backup: the backup's name, its labels, a sync wave
(list . wave) and a pointer back to the DatabaseBackup.
*/}}
{{- define "backup.engineMetadata" -}}
{{- $root := index . 0 -}}
name: {{ include "backup.name" $root | quote }}
namespace: {{ $root.Release.Namespace | quote }}
labels:
  {{- include "backup.labels" $root | nindent 2 }}
annotations:
  argocd.argoproj.io/sync-wave: {{ index . 1 | quote }}
  dbaas.io/database-backup: {{ include "backup.name" $root | quote }}
{{- end -}}
