{{/*
DragonflyDB: Dragonfly (dragonflydb.io/v1alpha1, dragonflydb/dragonfly-operator).
Size mapping: replicas -> replicas (primary plus replicas); cpu/memoryGi -> resources (Dragonfly
sizes its maxmemory from the memory limit); storageGi -> the snapshot volume
(snapshot.persistentVolumeClaimSpec), written every engines.dragonfly.snapshotCron.
The password comes from the credentials Secret (key password).
*/}}
{{- define "dbaas.engine.dragonfly" -}}
{{- $e := .Values.engines.dragonfly -}}
apiVersion: dragonflydb.io/v1alpha1
kind: Dragonfly
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  image: {{ printf "%s:%s" $e.image (include "dbaas.vTag" .) }}
  replicas: {{ int .Values.replicas }}
  resources:
    {{- include "dbaas.resources" .Values | nindent 4 }}
  podMetadata:
    labels:
      {{- include "dbaas.labels" . | nindent 6 }}
  authentication:
    passwordFromSecret:
      name: {{ include "dbaas.credentialsSecret" . | quote }}
      key: password
  snapshot:
    cron: {{ $e.snapshotCron | quote }}
    persistentVolumeClaimSpec:
      {{- include "dbaas.pvcSpec" . | nindent 6 }}
{{- end -}}
