{{/*
Aerospike (aerospike/aerospike-kubernetes-operator): the AerospikeCluster CRD (asdb.aerospike.com/v1)
has no backup field. The operator's Aerospike Backup Service resources (AerospikeBackup,
asdb.aerospike.com/v1beta1) run backup routines on their own schedule, and on-demand backups
only as runs of such a routine; rendering them would schedule backups beside the control plane.
The PoP's dbaas operator runs asbackup for the service's namespace and reports it on the
DatabaseBackup.
*/}}
{{- define "backup.engine.aerospike" -}}
{{- end -}}
