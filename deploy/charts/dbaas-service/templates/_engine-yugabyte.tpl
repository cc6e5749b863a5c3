{{/*
YugabyteDB: YBUniverse (operator.yugabyte.io/v1alpha1, yugabyte/yugabyte-k8s-operator).
Size mapping: replicas -> numNodes (replication factor 3 from 3 nodes, else 1);
cpu/memoryGi -> kubernetesOverrides.resource.tserver; storageGi -> deviceInfo.volumeSize (GB).
Masters get engines.yugabyte.master. YSQL only, with auth and TLS; the YSQL password comes from
the credentials Secret (key ysqlPassword).
*/}}
{{- define "dbaas.engine.yugabyte" -}}
{{- $e := .Values.engines.yugabyte -}}
apiVersion: operator.yugabyte.io/v1alpha1
kind: YBUniverse
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  universeName: {{ include "dbaas.fullname" . | quote }}
  numNodes: {{ int .Values.replicas }}
  replicationFactor: {{ ternary 3 1 (ge (int .Values.replicas) 3) }}
  ybSoftwareVersion: {{ .Values.engineVersion | quote }}
  enableYSQL: true
  enableYSQLAuth: true
  ysqlPassword:
    secretName: {{ include "dbaas.credentialsSecret" . | quote }}
  enableYCQL: false
  enableYCQLAuth: false
  enableNodeToNodeEncrypt: true
  enableClientToNodeEncrypt: true
  enableLoadBalancer: false
  deviceInfo:
    volumeSize: {{ int .Values.storageGi }}
    numVolumes: 1
    storageClass: {{ .Values.storageClass | quote }}
  masterDeviceInfo:
    volumeSize: {{ int $e.master.storageGi }}
    numVolumes: 1
    storageClass: {{ .Values.storageClass | quote }}
  kubernetesOverrides:
    resource:
      master:
        {{- include "dbaas.resources" $e.master | nindent 8 }}
      tserver:
        {{- include "dbaas.resources" .Values | nindent 8 }}
{{- end -}}
