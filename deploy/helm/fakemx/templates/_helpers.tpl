{{/* The common labels of everything this release makes. */}}
{{- define "fakemx.labels" -}}
app.kubernetes.io/name: fakemx
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image reference. */}}
{{- define "fakemx.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The API token's Secret: required whenever the API is on. */}}
{{- define "fakemx.apiSecret" -}}
{{ required "api.existingSecret: name a Secret holding the API token (kubectl create secret generic fakemx-api --from-literal=token=...), or set api.enabled=false" .Values.api.existingSecret }}
{{- end -}}
