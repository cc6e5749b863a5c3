{{/*
MongoDB Community (mongodb/mongodb-kubernetes, mongodbcommunity.mongodb.com/v1): the
MongoDBCommunity CRD has no backup resource or field (backups of the Enterprise resources go
through Ops Manager). The PoP's dbaas operator runs mongodump --oplog against the replica set and
reports it on the DatabaseBackup.
*/}}
{{- define "backup.engine.mongodb" -}}
{{- end -}}
