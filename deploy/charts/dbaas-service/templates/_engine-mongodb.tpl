{{/*
MongoDB: MongoDBCommunity (mongodbcommunity.mongodb.com/v1, mongodb/mongodb-kubernetes), a
replica set with SCRAM auth.
Size mapping: replicas -> members; cpu/memoryGi -> the mongod container's resources (through the
statefulSet override); storageGi -> the data-volume claim template. The mongodb-agent sidecar
gets engines.mongodb.agentResources. The admin password comes from the credentials Secret
(key password); the operator writes SCRAM credentials to "<name>-admin-scram-credentials".
*/}}
{{- define "dbaas.engine.mongodb" -}}
{{- $e := .Values.engines.mongodb -}}
apiVersion: mongodbcommunity.mongodb.com/v1
kind: MongoDBCommunity
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  type: ReplicaSet
  members: {{ int .Values.replicas }}
  version: {{ .Values.engineVersion | quote }}
  security:
    authentication:
      modes: [SCRAM]
  users:
    - name: admin
      db: admin
      passwordSecretRef:
        name: {{ include "dbaas.credentialsSecret" . | quote }}
        key: password
      roles:
        - {name: clusterAdmin, db: admin}
        - {name: userAdminAnyDatabase, db: admin}
        - {name: readWriteAnyDatabase, db: admin}
      scramCredentialsSecretName: {{ printf "%s-admin" (include "dbaas.fullname" .) | quote }}
  statefulSet:
    spec:
      template:
        metadata:
          labels:
            {{- include "dbaas.labels" . | nindent 12 }}
        spec:
          containers:
            - name: mongod
              resources:
                {{- include "dbaas.resources" .Values | nindent 16 }}
            - name: mongodb-agent
              resources:
                {{- include "dbaas.resources" $e.agentResources | nindent 16 }}
      volumeClaimTemplates:
        - metadata:
            name: data-volume
          spec:
            {{- include "dbaas.pvcSpec" . | nindent 12 }}
{{- end -}}
