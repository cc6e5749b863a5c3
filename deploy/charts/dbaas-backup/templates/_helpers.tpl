{{/*
Names of the dbaas-backup chart. "backup.claimName" MUST equal dbaas-service's "dbaas.fullname"
for the same service (tests/gitops/test_charts.py checks it): the backup points at that claim.
*/}}
{{- define "backup.claimName" -}}
{{- printf "%s-%s" (.Values.serviceName | trunc 21 | trimSuffix "-") (.Values.serviceId | toString | sha256sum | trunc 8) -}}
{{- end -}}

{{/* "<claim name>-<sha8(backupId)>": at most 39 characters. */}}
{{- define "backup.name" -}}
{{- printf "%s-%s" (include "backup.claimName" .) (.Values.backupId | toString | sha256sum | trunc 8) -}}
{{- end -}}

{{- define "backup.labels" -}}
{{- range $key, $_ := .Values.labels -}}
{{- if regexMatch "(^|[.])dbaas[.]io/" $key -}}
{{- fail (printf "labels: key %q is reserved for the platform (dbaas.io/ prefix); use another prefix" $key) -}}
{{- end -}}
{{- end -}}
{{- $platform := dict
      "app.kubernetes.io/name" "database-backup"
      "app.kubernetes.io/instance" (include "backup.name" .)
      "app.kubernetes.io/part-of" "dbaas"
      "app.kubernetes.io/managed-by" "dbaas"
      "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version)
      "dbaas.io/tenant" .Values.tenant
      "dbaas.io/service-id" (toString .Values.serviceId)
      "dbaas.io/backup-id" (toString .Values.backupId)
      "dbaas.io/pop" .Values.pop -}}
{{- toYaml (merge $platform (deepCopy (.Values.labels | default dict))) -}}
{{- end -}}
