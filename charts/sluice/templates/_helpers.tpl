{{/* Prefix of every object name: fullnameOverride, else the release name. */}}
{{- define "sluice.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "operator"). */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "sluice.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select a component's pods; they never change across upgrades. */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's ServiceAccount name; call with (dict "root" $ "component" "operator"). */}}
{{- define "sluice.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- default (printf "%s-%s" (include "sluice.fullname" .root) .component) $sa.name -}}
{{- end -}}

{{/* A component's image reference; call with (dict "root" $ "component" "operator"). */}}
{{- define "sluice.image" -}}
{{- $image := (index .root.Values .component).image -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* Whether the collectors' query API runs over mutual TLS. */}}
{{- define "sluice.queryTls.enabled" -}}
{{- if and .Values.logsApi.enabled .Values.logsApi.queryTls.enabled }}true{{ end -}}
{{- end -}}

{{/* The Secret with the collectors' query serving certificate (tls.crt, tls.key) and the CA of
     the operator's client certificate (ca.crt). */}}
{{- define "sluice.queryTls.collectorSecret" -}}
{{- default (printf "%s-query-collector-tls" (include "sluice.fullname" .)) .Values.logsApi.queryTls.collectorSecretName -}}
{{- end -}}

{{/* The Secret with the operator's query client certificate (tls.crt, tls.key) and the CA of the
     collectors' serving certificate (ca.crt). */}}
{{- define "sluice.queryTls.operatorSecret" -}}
{{- default (printf "%s-query-operator-tls" (include "sluice.fullname" .)) .Values.logsApi.queryTls.operatorSecretName -}}
{{- end -}}
