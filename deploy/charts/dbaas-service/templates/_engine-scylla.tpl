{{/*
ScyllaDB: ScyllaCluster (scylla.scylladb.com/v1, scylladb/scylla-operator), one datacenter named
after the PoP with one rack.
Size mapping: replicas -> racks[].members; cpu/memoryGi -> racks[].resources (requests == limits,
as Scylla's cpuset mode expects); storageGi -> racks[].storage.capacity. The manager agent
sidecar gets engines.scylla.agentResources.
*/}}
{{- define "dbaas.engine.scylla" -}}
{{- $e := .Values.engines.scylla -}}
apiVersion: scylla.scylladb.com/v1
kind: ScyllaCluster
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  version: {{ .Values.engineVersion | quote }}
  developerMode: false
  automaticOrphanedNodeCleanup: true
  podMetadata:
    labels:
      {{- include "dbaas.labels" . | nindent 6 }}
  datacenter:
    name: {{ .Values.pop }}
    racks:
      - name: {{ .Values.pop }}-a
        members: {{ int .Values.replicas }}
        storage:
          capacity: {{ include "dbaas.storage" .Values.storageGi | quote }}
          storageClassName: {{ .Values.storageClass | quote }}
        resources:
          {{- include "dbaas.resources" .Values | nindent 10 }}
        agentResources:
          {{- include "dbaas.resources" $e.agentResources | nindent 10 }}
{{- end -}}
