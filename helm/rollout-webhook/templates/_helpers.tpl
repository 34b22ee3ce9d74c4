{{/* Names. The full name also names the Service, the TLS Secret and both webhook configurations. */}}
{{- define "rollout-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rollout-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rollout-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollout-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rollout-webhook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rollout-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The pods of the certificate Jobs: a name of their own, so that neither the Service nor the
PodDisruptionBudget selects them (a budget over pods of a Job cannot be computed, and the
disruption controller then allows no eviction of the webhook's pods). */}}
{{- define "rollout-webhook.certificatePodLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rollout-webhook.name" . }}-certificates
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: certificates
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rollout-webhook.serviceAccountName" -}}
{{- include "rollout-webhook.fullname" . }}
{{- end }}

{{/* The user the API server sees for the webhook's own requests. */}}
{{- define "rollout-webhook.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "rollout-webhook.serviceAccountName" .) }}
{{- end }}

{{- define "rollout-webhook.policyName" -}}
{{- default (printf "%s-policy" (include "rollout-webhook.fullname" .)) .Values.policy.name }}
{{- end }}

{{- define "rollout-webhook.tlsSecretName" -}}
{{- printf "%s-tls" (include "rollout-webhook.fullname" .) }}
{{- end }}

{{- define "rollout-webhook.reconcilerLeaseName" -}}
{{- printf "%s-reconciler" (include "rollout-webhook.fullname" .) }}
{{- end }}

{{- define "rollout-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces never sent to the webhook: the control plane's own, and the webhook's (it must
     be able to start, and roll back, with no webhook answering). */}}
{{- define "rollout-webhook.excludedNamespaces" -}}
{{- $names := concat (list "kube-system" "kube-node-lease" .Release.Namespace) .Values.webhook.excludeNamespaces }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* Pod and container security settings shared by the server and the certificate Jobs. */}}
{{- define "rollout-webhook.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "rollout-webhook.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Arguments naming the chart's objects for `rollout-webhook certs bootstrap|rotate`. */}}
{{- define "rollout-webhook.certsArgs" -}}
- --in-cluster
- --service={{ include "rollout-webhook.fullname" . }}
- --namespace={{ .Release.Namespace }}
- --secret-name={{ include "rollout-webhook.tlsSecretName" . }}
- --mutating-webhook={{ include "rollout-webhook.fullname" . }}
- --validating-webhook={{ include "rollout-webhook.fullname" . }}
{{- end }}
