{{/* Names, labels and switches shared by the templates. */}}

{{- define "lmo.name" -}}
lmo
{{- end }}

{{/* Release-scoped name, at most 63 characters; "lmo" itself when the release is called lmo. */}}
{{- define "lmo.fullname" -}}
{{- if contains "lmo" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lmo" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "lmo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lmo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lmo.labels" -}}
{{ include "lmo.selectorLabels" . }}
{{ include "lmo.commonLabels" . }}
{{- end }}

{{/* Labels without the component (objects that are not the operator's own). */}}
{{- define "lmo.commonLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lmo
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "lmo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lmo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "lmo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{- define "lmo.converterImage" -}}
{{- printf "%s:%s" .Values.converter.image.repository (default .Chart.AppVersion .Values.converter.image.tag) -}}
{{- end }}

{{- define "lmo.converterGpuImage" -}}
{{- printf "%s:%s" .Values.converter.gpuImage.repository (default .Chart.AppVersion .Values.converter.gpuImage.tag) -}}
{{- end }}

{{/* "true" when the operator watches every namespace. */}}
{{- define "lmo.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end }}
