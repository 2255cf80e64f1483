{{- define "flow-adapter-flux.name" -}}flow-adapter-flux{{- end -}}

{{/* Labels; pass (dict "root" . "component" "emit"|"recover"). */}}
{{- define "flow-adapter-flux.labels" -}}
app.kubernetes.io/name: flow-adapter-flux
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: openova-flow
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
{{- end -}}

{{- define "flow-adapter-flux.selector" -}}
app.kubernetes.io/name: flow-adapter-flux
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image with a required tag and the optional mirror prefix. */}}
{{- define "flow-adapter-flux.image" -}}
{{- $v := .Values.flowAdapter.image -}}
{{- $tag := required "flowAdapter.image.tag is required: CI stamps the commit SHA (no latest)" $v.tag -}}
{{- $repo := $v.repository -}}
{{- with .Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) (regexReplaceAll "^[^/]+/" $repo "") -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Pod and container hardening shared by the DaemonSet and the CronJob. */}}
{{- define "flow-adapter-flux.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "flow-adapter-flux.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
