{{/*
Names of the dbaas-argocd-apps chart. Every name is a DNS-1123 label of at most 63 characters;
when "<tenant>-<pop>" (or "<prefix><tenant>") would be longer, the tenant part is shortened and
8 hex characters of sha256(tenant) keep distinct tenants distinct.
*/}}

{{/* "<head>-<sha8(tenant)>" with head cut so that the whole fits in $room characters. */}}
{{- define "apps.fitTenant" -}}
{{- $tenant := index . 0 -}}
{{- $room := index . 1 -}}
{{- if le (len $tenant) $room -}}
{{- $tenant -}}
{{- else -}}
{{- printf "%s-%s" ($tenant | trunc (int (sub $room 9)) | trimSuffix "-") ($tenant | sha256sum | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* Application name: "<tenant>-<pop>". Args: list root app. */}}
{{- define "apps.name" -}}
{{- $app := index . 1 -}}
{{- printf "%s-%s" (include "apps.fitTenant" (list $app.tenant (sub 62 (len $app.pop)))) $app.pop -}}
{{- end -}}

{{/* Destination namespace: "<namespacePrefix><tenant>". Args: list root app. */}}
{{- define "apps.namespace" -}}
{{- $root := index . 0 -}}
{{- $app := index . 1 -}}
{{- $prefix := $root.Values.namespacePrefix -}}
{{- printf "%s%s" $prefix (include "apps.fitTenant" (list $app.tenant (sub 63 (len $prefix)))) -}}
{{- end -}}

{{- define "apps.labels" -}}
{{- $root := index . 0 -}}
{{- $app := index . 1 -}}
app.kubernetes.io/part-of: dbaas
app.kubernetes.io/managed-by: dbaas
app.kubernetes.io/component: tenant-sync
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | quote }}
dbaas.io/tenant: {{ $app.tenant | quote }}
dbaas.io/pop: {{ $app.pop | quote }}
{{- end -}}
