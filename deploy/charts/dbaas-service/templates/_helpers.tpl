{{/*
Shared helpers of the dbaas-service chart: names, labels, metadata and Kubernetes quantities.
Every engine template (_engine-*.tpl) builds on these, so names and labels are identical across
engines and across the ServiceClaim.
*/}}

{{/*
Rules values.schema.json cannot state with a message people can act on; included once, by
serviceclaim.yaml. Renders nothing, or fails the render.
*/}}
{{- define "dbaas.validate" -}}
{{- range $key, $_ := .Values.labels -}}
{{- if regexMatch "(^|[.])dbaas[.]io/" $key -}}
{{- fail (printf "labels: key %q is reserved for the platform (dbaas.io/ prefix); use another prefix" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* 8 hex characters of sha256(serviceId): stable, uniform, label-safe for any id format. */}}
{{- define "dbaas.shortId" -}}
{{- .Values.serviceId | toString | sha256sum | trunc 8 -}}
{{- end -}}

{{/*
Resource name: "<name, at most 21 chars>-<shortId>", so at most 30 characters. Engine operators
append their own suffixes (StatefulSets, pods, per-rack services), and those must stay within 63.
*/}}
{{- define "dbaas.fullname" -}}
{{- printf "%s-%s" (.Values.name | trunc 21 | trimSuffix "-") (include "dbaas.shortId" .) -}}
{{- end -}}

{{/* Database / keyspace / Aerospike namespace name: the service name with underscores, <= 31 chars. */}}
{{- define "dbaas.databaseName" -}}
{{- .Values.name | replace "-" "_" | trunc 31 | trimSuffix "_" -}}
{{- end -}}

{{- define "dbaas.credentialsSecret" -}}
{{- .Values.credentialsSecret | default (printf "%s-credentials" (include "dbaas.fullname" .)) -}}
{{- end -}}

{{/*
Labels on every object (and on pods, where the engine CR allows it). Platform labels win over
tenant labels with the same key; values.schema.json already rejects tenant keys under dbaas.io/.
*/}}
{{- define "dbaas.labels" -}}
{{- $platform := dict
      "app.kubernetes.io/name" .Values.engine
      "app.kubernetes.io/instance" (include "dbaas.fullname" .)
      "app.kubernetes.io/part-of" "dbaas"
      "app.kubernetes.io/managed-by" "dbaas"
      "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version)
      "dbaas.io/tenant" .Values.tenant
      "dbaas.io/service-id" (toString .Values.serviceId)
      "dbaas.io/engine" .Values.engine
      "dbaas.io/pop" .Values.pop -}}
{{- toYaml (merge $platform (deepCopy (.Values.labels | default dict))) -}}
{{- end -}}

{{/* metadata of the engine operator CR: applied after the ServiceClaim (sync wave 1). */}}
{{- define "dbaas.engineMetadata" -}}
name: {{ include "dbaas.fullname" . | quote }}
namespace: {{ .Release.Namespace | quote }}
labels:
  {{- include "dbaas.labels" . | nindent 2 }}
annotations:
  argocd.argoproj.io/sync-wave: "1"
  dbaas.io/service-claim: {{ include "dbaas.fullname" . | quote }}
  {{- if .Values.deletionProtection }}
  {{- /* Argo CD then neither prunes (file removed from git) nor deletes (Application deleted)
         the object: the platform lifts deletion protection first, in its own commit. */}}
  argocd.argoproj.io/sync-options: Prune=false,Delete=false
  {{- end }}
{{- end -}}

{{/* CPU quantity from cores (a number): 2 -> "2", 0.5 -> "500m"; rounded to millicores. */}}
{{- define "dbaas.cpu" -}}
{{- $milli := int (round (mulf . 1000) 0) -}}
{{- if eq (mod $milli 1000) 0 -}}{{ div $milli 1000 }}{{- else -}}{{ $milli }}m{{- end -}}
{{- end -}}

{{/* Memory quantity from GiB (a number): 8 -> "8Gi", 0.25 -> "256Mi"; rounded to MiB. */}}
{{- define "dbaas.memory" -}}
{{- $mi := int (round (mulf . 1024) 0) -}}
{{- if eq (mod $mi 1024) 0 -}}{{ div $mi 1024 }}Gi{{- else -}}{{ $mi }}Mi{{- end -}}
{{- end -}}

{{- define "dbaas.storage" -}}
{{- printf "%dGi" (int .) -}}
{{- end -}}

{{/*
requests == limits (Guaranteed QoS, which ScyllaDB's cpuset mode and predictable database
latency need) from a dict with "cpu" (cores) and "memoryGi".
*/}}
{{- define "dbaas.resources" -}}
{{- $cpu := include "dbaas.cpu" .cpu -}}
{{- $memory := include "dbaas.memory" .memoryGi -}}
requests:
  cpu: {{ $cpu | quote }}
  memory: {{ $memory | quote }}
limits:
  cpu: {{ $cpu | quote }}
  memory: {{ $memory | quote }}
{{- end -}}

{{/* A ReadWriteOnce PersistentVolumeClaim spec of .Values.storageGi on .Values.storageClass. */}}
{{- define "dbaas.pvcSpec" -}}
accessModes: [ReadWriteOnce]
storageClassName: {{ .Values.storageClass | quote }}
resources:
  requests:
    storage: {{ include "dbaas.storage" .Values.storageGi | quote }}
{{- end -}}

{{/* Image tag with exactly one leading "v" (vitess, dragonfly tag their images v1.2.3). */}}
{{- define "dbaas.vTag" -}}
{{- printf "v%s" (.Values.engineVersion | trimPrefix "v") -}}
{{- end -}}
