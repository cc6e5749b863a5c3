{{- define "popop.labels" -}}
app.kubernetes.io/name: dbaas-pop-operator
app.kubernetes.io/part-of: dbaas
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
dbaas.io/pop: {{ required "pop is required" .Values.pop | quote }}
{{- end -}}
