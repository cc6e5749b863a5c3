{{/*
Aerospike: AerospikeCluster (asdb.aerospike.com/v1, aerospike/aerospike-kubernetes-operator;
Enterprise images only, so a per-PoP feature-key Secret is mounted).
Size mapping: replicas -> size (replication-factor 2 from 2 nodes, else 1);
cpu/memoryGi -> podSpec.aerospikeContainer.resources; storageGi -> the data volume, holding one
file-backed namespace sized to 90% of it. The admin password comes from the credentials Secret
(key password).
*/}}
{{- define "dbaas.engine.aerospike" -}}
{{- $e := .Values.engines.aerospike -}}
{{- $ns := include "dbaas.databaseName" . -}}
{{- $replicas := int .Values.replicas -}}
apiVersion: asdb.aerospike.com/v1
kind: AerospikeCluster
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  size: {{ $replicas }}
  image: {{ printf "%s:%s" $e.image .Values.engineVersion }}
  podSpec:
    multiPodPerHost: false
    metadata:
      labels:
        {{- include "dbaas.labels" . | nindent 8 }}
    aerospikeContainer:
      resources:
        {{- include "dbaas.resources" .Values | nindent 8 }}
  storage:
    filesystemVolumePolicy:
      initMethod: deleteFiles
      cascadeDelete: true
    volumes:
      - name: workdir
        aerospike:
          path: /opt/aerospike
        source:
          persistentVolume:
            storageClass: {{ .Values.storageClass | quote }}
            volumeMode: Filesystem
            size: 1Gi
      - name: data
        aerospike:
          path: /opt/aerospike/data
        source:
          persistentVolume:
            storageClass: {{ .Values.storageClass | quote }}
            volumeMode: Filesystem
            size: {{ include "dbaas.storage" .Values.storageGi | quote }}
      - name: aerospike-config-secret
        aerospike:
          path: /etc/aerospike/secret
        source:
          secret:
            secretName: {{ $e.featureKeySecret }}
  aerospikeAccessControl:
    users:
      - name: admin
        secretName: {{ include "dbaas.credentialsSecret" . | quote }}
        roles: [sys-admin, user-admin, read-write]
  aerospikeConfig:
    service:
      feature-key-file: /etc/aerospike/secret/features.conf
    security: {}
    network:
      service:
        port: 3000
      fabric:
        port: 3001
      heartbeat:
        port: 3002
    namespaces:
      - name: {{ $ns | quote }}
        replication-factor: {{ min 2 $replicas }}
        storage-engine:
          type: device
          files: [{{ printf "/opt/aerospike/data/%s.dat" $ns | quote }}]
          {{- /* 90% of the volume, in whole MiB (Aerospike wants MiB-aligned file sizes). */}}
          filesize: {{ mul (div (mul (int .Values.storageGi) 1024 9) 10) 1048576 }}
{{- end -}}
