{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and labels. */}}
{{- define "tunix-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "tunix-operator.fullname" -}}
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

{{- define "tunix-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunix-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tunix-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tunix-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tunix-rt
{{- end }}

{{- define "tunix-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tunix-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tunix-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tunix-operator.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
RBAC: every permission the operator has is written here, once.
"tunix-operator.rules" are the namespaced rules: a Role in each watched namespace, or
part of the ClusterRole in cluster-wide mode. kopf's own needs are listed separately.
*/}}
{{- define "tunix-operator.rules" -}}
# The TunixRun resources: watched by kopf, which patches its annotations (and removes the finalizer
# that operators before 2026-11-26 added);
# the operator reconciles from the watched body and never reads a run by name.
- apiGroups: ["tunix.dev"]
  resources: ["tunixruns"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tunix.dev"]
  resources: ["tunixruns/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["tunix.dev"]
  resources: ["tunixruns/finalizers"]
  verbs: ["update"]
# One Job per attempt (deleted to suspend, retry or after the TTL); its pods are read for exit codes.
# Both are watched (label-selected: app.kubernetes.io/managed-by=tunix-operator), never read by name.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete"]
# Pods are patched only to set the tunix.dev/last-checkpoint-time annotation (status.checkpoint).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# The multi-host coordinator (headless Service) and the checkpoint PVC; both go with the run
# through ownerReferences (garbage collection), so the operator never deletes them.
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["create"]
# Object-storage credentials named by spec.storage.credentialsSecret (read only).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events about runs (kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and (include "tunix-operator.peering" .) .Values.watchNamespaces }}
# kopf peering (replicas > 1) per watched namespace: one active operator per namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* kopf's cluster-scoped needs: discovering CRDs, and namespaces when it watches only some (read only). */}}
{{- define "tunix-operator.clusterRules" -}}
# kopf's discovery of CRDs (a cluster-wide operator only: watching named namespaces, the operator
# turns kopf's scanning off and needs nothing cluster-scoped).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if include "tunix-operator.peering" . }}
# kopf peering (replicas > 1) of a cluster-wide operator.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}
