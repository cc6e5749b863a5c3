{{/*
Vitess: VitessCluster (planetscale.com/v2, planetscale/vitess-operator), one cell named after the
PoP and one unsharded keyspace named after the service. All components run vitess/lite with the
tag engineVersion (a MySQL 8.0 flavour suffix is added when the version has none).
Size mapping: replicas -> tabletPools[].replicas (semi_sync durability from 3 replicas);
cpu/memoryGi -> tabletPools[].mysqld.resources; storageGi -> dataVolumeClaimTemplate.
vttablet, vtgate and vtctld get engines.vitess.*. The credentials Secret supplies users.json
(vtgate static auth) and init_db.sql (the shard's database init script).
*/}}
{{- define "dbaas.engine.vitess" -}}
{{- $e := .Values.engines.vitess -}}
{{- $tag := include "dbaas.vTag" . -}}
{{- /* engineVersion may be a bare release (v22.0.1) or a full vitess/lite tag (v22.0.1-mysql80). */ -}}
{{- if not (regexMatch "-(mysql|percona|mariadb)[0-9]*$" $tag) -}}
{{- $tag = printf "%s-mysql80" $tag -}}
{{- end -}}
{{- $image := printf "%s:%s" $e.image $tag -}}
{{- $replicas := int .Values.replicas -}}
apiVersion: planetscale.com/v2
kind: VitessCluster
metadata:
  {{- include "dbaas.engineMetadata" . | nindent 2 }}
spec:
  images:
    vtctld: {{ $image }}
    vtgate: {{ $image }}
    vttablet: {{ $image }}
    vtorc: {{ $image }}
    vtbackup: {{ $image }}
    mysqld:
      mysql80Compatible: {{ $image }}
  cells:
    - name: {{ .Values.pop }}
      gateway:
        replicas: {{ min 2 $replicas }}
        authentication:
          static:
            secret:
              name: {{ include "dbaas.credentialsSecret" . | quote }}
              key: users.json
        resources:
          {{- include "dbaas.resources" $e.vtgate | nindent 10 }}
        extraLabels:
          {{- include "dbaas.labels" . | nindent 10 }}
  vitessDashboard:
    cells: [{{ .Values.pop }}]
    replicas: 1
    resources:
      {{- include "dbaas.resources" $e.vtctld | nindent 6 }}
    extraLabels:
      {{- include "dbaas.labels" . | nindent 6 }}
  keyspaces:
    - name: {{ include "dbaas.databaseName" . | quote }}
      durabilityPolicy: {{ ternary "semi_sync" "none" (ge $replicas 3) }}
      turndownPolicy: RequireIdle
      partitionings:
        - equal:
            parts: 1
            shardTemplate:
              databaseInitScriptSecret:
                name: {{ include "dbaas.credentialsSecret" . | quote }}
                key: init_db.sql
              tabletPools:
                - cell: {{ .Values.pop }}
                  type: replica
                  replicas: {{ $replicas }}
                  extraLabels:
                    {{- include "dbaas.labels" . | nindent 20 }}
                  vttablet:
                    resources:
                      {{- include "dbaas.resources" $e.vttablet | nindent 22 }}
                  mysqld:
                    resources:
                      {{- include "dbaas.resources" .Values | nindent 22 }}
                  dataVolumeClaimTemplate:
                    {{- include "dbaas.pvcSpec" . | nindent 20 }}
  updateStrategy:
    type: Immediate
{{- end -}}
