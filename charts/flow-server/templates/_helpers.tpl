{{- define "flow-server.name" -}}flow-server{{- end -}}

{{- define "flow-server.labels" -}}
app.kubernetes.io/name: flow-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: openova-flow
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "flow-server.selector" -}}
app.kubernetes.io/name: flow-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Image with a required tag and the optional mirror prefix. */}}
{{- define "flow-server.image" -}}
{{- $v := .Values.flowServer.image -}}
{{- $tag := required "flowServer.image.tag is required: CI stamps the commit SHA (no latest)" $v.tag -}}
{{- $repo := $v.repository -}}
{{- with .Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) (regexReplaceAll "^[^/]+/" $repo "") -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
