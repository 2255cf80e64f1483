{{- define "continuum.name" -}}continuum-controller{{- end -}}

{{- define "continuum.labels" -}}
app.kubernetes.io/name: continuum-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: continuum
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "continuum.selector" -}}
app.kubernetes.io/name: continuum-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Image with a required tag and the optional mirror prefix. */}}
{{- define "continuum.image" -}}
{{- $v := .Values.continuum.image -}}
{{- $tag := required "continuum.image.tag is required: CI stamps the commit SHA (no latest)" $v.tag -}}
{{- $repo := $v.repository -}}
{{- with .Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) (regexReplaceAll "^[^/]+/" $repo "") -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
