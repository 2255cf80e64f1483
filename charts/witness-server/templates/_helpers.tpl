{{- define "witness-server.labels" -}}
app.kubernetes.io/name: witness-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: continuum
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "witness-server.selector" -}}
app.kubernetes.io/name: witness-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "witness-server.image" -}}
{{- $v := .Values.witnessServer.image -}}
{{- $tag := required "witnessServer.image.tag is required: CI stamps the commit SHA (no latest)" $v.tag -}}
{{- $repo := $v.repository -}}
{{- with .Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) (regexReplaceAll "^[^/]+/" $repo "") -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
