{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "capi-stream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already holds the chart's. */}}
{{- define "capi-stream.fullname" -}}
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

{{- define "capi-stream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades, so never the chart version. */}}
{{- define "capi-stream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capi-stream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "capi-stream.labels" -}}
{{ include "capi-stream.labelsWithoutComponent" . }}
app.kubernetes.io/component: forwarder
{{- end }}

{{- define "capi-stream.labelsWithoutComponent" -}}
helm.sh/chart: {{ include "capi-stream.chart" . }}
{{ include "capi-stream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* `annotations:` with commonAnnotations and the object's own (a dict, may be empty); nothing
when both are empty. Call with (dict "context" $ "annotations" $own). */}}
{{- define "capi-stream.annotations" -}}
{{- $all := merge (dict) (.annotations | default dict) .context.Values.commonAnnotations }}
{{- with $all -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "capi-stream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "capi-stream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository(@digest|:tag); global.imageRegistry wins over image.registry. */}}
{{- define "capi-stream.image" -}}
{{- $registry := default .Values.image.registry (.Values.global).imageRegistry }}
{{- $repository := .Values.image.repository }}
{{- if $registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* True on OpenShift (or when forced): the restricted SCC assigns uid, gid and fsGroup itself
and rejects fixed ones outside the namespace's range. */}}
{{- define "capi-stream.openshift" -}}
{{- $mode := ((((.Values.global).compatibility).openshift).adaptSecurityContext) | default "auto" }}
{{- if or (eq $mode "force") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "security.openshift.io/v1")) }}true{{ end }}
{{- end }}

{{/* A security context without the ids OpenShift assigns. Call with (dict "context" $ "securityContext" $sc). */}}
{{- define "capi-stream.securityContext" -}}
{{- $sc := deepCopy (.securityContext | default dict) }}
{{- if include "capi-stream.openshift" .context }}
{{- $sc = omit $sc "runAsUser" "runAsGroup" "fsGroup" }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* The capi-stream container's env, envFrom, and the volumes and mounts that carry its config and
secrets: shared by the Deployment and the `helm test` pod so `verify` sees what `run` sees. */}}
{{- define "capi-stream.containerEnv" -}}
{{- with .Values.extraEnv }}
env:
  {{- tpl (toYaml .) $ | nindent 2 }}
{{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- tpl (toYaml .) $ | nindent 2 }}
{{- end }}
{{- end }}

{{- define "capi-stream.volumeMounts" -}}
- name: config
  mountPath: /etc/capi-stream
  readOnly: true
- name: pinterest-token
  mountPath: {{ include "capi-stream.tokenDir" . }}
  readOnly: true
{{- if include "capi-stream.qualityTokenMounted" . }}
- name: pinterest-quality-token
  mountPath: {{ include "capi-stream.qualityTokenDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: kafka-sasl
  mountPath: {{ include "capi-stream.saslDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "capi-stream.caDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
- name: identity-state
  mountPath: /var/lib/capi-stream
{{- with .Values.extraVolumeMounts }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}

{{- define "capi-stream.volumes" -}}
- name: config
  configMap:
    name: {{ include "capi-stream.fullname" . }}
- name: pinterest-token
  secret:
    secretName: {{ include "capi-stream.tokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "capi-stream.tokenSecretKey" . }}
        path: {{ include "capi-stream.tokenSecretKey" . }}
{{- if include "capi-stream.qualityTokenMounted" . }}
- name: pinterest-quality-token
  secret:
    secretName: {{ include "capi-stream.qualityTokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "capi-stream.qualityTokenSecretKey" . }}
        path: {{ include "capi-stream.qualityTokenSecretKey" . }}
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: kafka-sasl
  secret:
    secretName: {{ include "capi-stream.saslSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "capi-stream.saslSecretKey" . }}
        path: {{ include "capi-stream.saslSecretKey" . }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caSecretKey }}
        path: {{ .Values.kafka.tls.caSecretKey }}
{{- end }}
# Writable scratch space; the root filesystem is read-only.
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
# Identity enrichment's stores (empty unless a source enriches); rebuilt from the changelog.
- name: identity-state
  emptyDir:
    sizeLimit: {{ .Values.identityState.sizeLimit }}
{{- with .Values.extraVolumes }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}

{{/* The chart's probe on the metrics port, or the operator's whole replacement. Call with
(dict "override" $probeValue "path" "/healthz" "timing" $probesTiming). */}}
{{- define "capi-stream.probe" -}}
{{- if .override }}
{{- toYaml .override }}
{{- else }}
httpGet:
  path: {{ .path }}
  port: metrics
periodSeconds: {{ .timing.periodSeconds }}
failureThreshold: {{ .timing.failureThreshold }}
{{- end }}
{{- end }}

{{/* PromQL label matchers scoping the alert rules to this release's scrape job. */}}
{{- define "capi-stream.ruleSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q,job=%q" .Release.Namespace (printf "%s-metrics" (include "capi-stream.fullname" .)) }}
{{- end }}
{{- end }}

{{/* `--set` turns digit strings into numbers; ad account ids must stay exact digit strings. */}}
{{- define "capi-stream.adAccountId" -}}
{{- $id := .Values.pinterest.adAccountId }}
{{- if kindIs "string" $id }}{{ $id }}{{ else }}{{ $id | int64 | toString }}{{ end }}
{{- end }}

{{- define "capi-stream.tokenSecretName" -}}
{{- default (printf "%s-pinterest" (include "capi-stream.fullname" .)) .Values.pinterest.existingSecret }}
{{- end }}

{{- define "capi-stream.tokenSecretKey" -}}
{{- if .Values.pinterest.existingSecret }}{{ .Values.pinterest.existingSecretKey }}{{ else }}access-token{{ end }}
{{- end }}

{{/* The quality poller's own ads:read token is a file only when one is given: without it the
forwarder falls back to the conversions token, which is mounted already. */}}
{{- define "capi-stream.qualityTokenMounted" -}}
{{- $quality := .Values.pinterest.quality }}
{{- if and $quality.enabled (or $quality.accessToken $quality.existingSecret) }}true{{ end }}
{{- end }}

{{- define "capi-stream.qualityTokenSecretName" -}}
{{- default (printf "%s-pinterest-quality" (include "capi-stream.fullname" .)) .Values.pinterest.quality.existingSecret }}
{{- end }}

{{- define "capi-stream.qualityTokenSecretKey" -}}
{{- if .Values.pinterest.quality.existingSecret }}{{ .Values.pinterest.quality.existingSecretKey }}{{ else }}access-token{{ end }}
{{- end }}

{{/* SASL needs a password file when a mechanism is set. */}}
{{- define "capi-stream.saslEnabled" -}}
{{- if .Values.kafka.sasl.mechanism }}true{{ end }}
{{- end }}

{{- define "capi-stream.saslSecretName" -}}
{{- default (printf "%s-kafka-sasl" (include "capi-stream.fullname" .)) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "capi-stream.saslSecretKey" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.existingSecretKey }}{{ else }}password{{ end }}
{{- end }}

{{/* Where secrets are mounted in the pod; the config file refers to these paths. */}}
{{- define "capi-stream.tokenDir" -}}/var/run/secrets/capi-stream/pinterest{{- end }}
{{- define "capi-stream.qualityTokenDir" -}}/var/run/secrets/capi-stream/pinterest-quality{{- end }}
{{- define "capi-stream.saslDir" -}}/var/run/secrets/capi-stream/kafka-sasl{{- end }}
{{- define "capi-stream.caDir" -}}/var/run/secrets/capi-stream/kafka-ca{{- end }}

{{/* The most replicas that can do work: autoscaling.maxReplicas, or the partition count. */}}
{{- define "capi-stream.maxReplicas" -}}
{{- $max := int .Values.autoscaling.maxReplicas }}
{{- if eq $max 0 }}{{ $max = int .Values.kafka.partitions }}{{ end }}
{{- $max }}
{{- end }}

{{/* Inconsistent values fail the render with a message naming the key. */}}
{{- define "capi-stream.validate" -}}
{{- if not .Values.kafka.bootstrapServers }}
{{- fail "kafka.bootstrapServers is required: set it, e.g. --set kafka.bootstrapServers=kafka.kafka.svc:9092" }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled (lt (int .Values.autoscaling.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas 0 needs KEDA (autoscaling.keda.enabled): an HPA cannot scale to zero" }}
{{- end }}
{{- if and .Values.pinterest.accessToken .Values.pinterest.existingSecret }}
{{- fail "pinterest.accessToken and pinterest.existingSecret are exclusive: set one" }}
{{- end }}
{{- if and .Values.pinterest.quality.accessToken .Values.pinterest.quality.existingSecret }}
{{- fail "pinterest.quality.accessToken and pinterest.quality.existingSecret are exclusive: set one" }}
{{- end }}
{{- if and .Values.kafka.sasl.password .Values.kafka.sasl.existingSecret }}
{{- fail "kafka.sasl.password and kafka.sasl.existingSecret are exclusive: set one" }}
{{- end }}
{{- if and .Values.kafka.sasl.mechanism (not (hasPrefix "SASL_" .Values.kafka.securityProtocol)) }}
{{- fail "kafka.sasl.mechanism needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.mechanism) }}
{{- fail "kafka.securityProtocol SASL_* needs kafka.sasl.mechanism" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int (ceil .Values.shutdown.grace_period_s)) }}
{{- fail "terminationGracePeriodSeconds must be above shutdown.grace_period_s, or pods are killed mid-drain" }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are exclusive: KEDA manages its own HPA" }}
{{- end }}
{{- if gt (int (include "capi-stream.maxReplicas" .)) (int .Values.kafka.partitions) }}
{{- fail "autoscaling.maxReplicas must not exceed kafka.partitions: extra consumers would sit idle" }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicas) (int (include "capi-stream.maxReplicas" .)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/* The configuration file `capi-stream run` reads (see `capi-stream check-config`). */}}
{{- define "capi-stream.config" -}}
{{- $kafka := dict "group_id" .Values.kafka.groupId "dead_letter_topic" .Values.kafka.deadLetterTopic "security_protocol" .Values.kafka.securityProtocol }}
{{- $_ := set $kafka "bootstrap_servers" .Values.kafka.bootstrapServers }}
{{- if .Values.kafka.sasl.mechanism }}
{{- $_ := set $kafka "sasl_mechanism" .Values.kafka.sasl.mechanism }}
{{- with .Values.kafka.sasl.username }}{{ $_ := set $kafka "sasl_username" . }}{{ end }}
{{- $_ := set $kafka "sasl_password_file" (printf "%s/%s" (include "capi-stream.saslDir" .) (include "capi-stream.saslSecretKey" .)) }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
{{- $_ := set $kafka "ssl_ca_location" (printf "%s/%s" (include "capi-stream.caDir" .) .Values.kafka.tls.caSecretKey) }}
{{- end }}
{{- with .Values.kafka.properties }}{{ $_ := set $kafka "properties" . }}{{ end }}
{{- $pinterest := dict "api_base_url" .Values.pinterest.apiBaseUrl "test_mode" .Values.pinterest.testMode "requests_per_minute" (int .Values.pinterest.requestsPerMinute) }}
{{- $_ := set $pinterest "access_token_file" (printf "%s/%s" (include "capi-stream.tokenDir" .) (include "capi-stream.tokenSecretKey" .)) }}
{{- $account := include "capi-stream.adAccountId" . }}
{{- if $account }}{{ $_ := set $pinterest "ad_account_id" $account }}{{ end }}
{{- with .Values.pinterest.quality }}{{ if .enabled }}
{{- $quality := dict "enabled" true "poll_interval_s" .pollIntervalSeconds "request_timeout_s" .requestTimeoutSeconds }}
{{- if include "capi-stream.qualityTokenMounted" $ }}
{{- $_ := set $quality "access_token_file" (printf "%s/%s" (include "capi-stream.qualityTokenDir" $) (include "capi-stream.qualityTokenSecretKey" $)) }}
{{- end }}
{{- $_ := set $pinterest "quality" $quality }}
{{- end }}{{ end }}
{{- $config := dict "kafka" $kafka "pinterest" $pinterest "sources" .Values.sources }}
{{- with .Values.batching }}{{ $_ := set $config "batching" . }}{{ end }}
{{- with .Values.sending }}{{ $_ := set $config "sending" . }}{{ end }}
{{- with .Values.buffer }}{{ $_ := set $config "buffer" . }}{{ end }}
{{- $_ := set $config "shutdown" .Values.shutdown }}
{{- $_ := set $config "identity" (merge (dict "state_dir" "/var/lib/capi-stream/identity") .Values.identity) }}
{{- $_ := set $config "metrics" (dict "host" "0.0.0.0" "port" (int .Values.metrics.port)) }}
{{- $_ := set $config "logging" .Values.logging }}
{{- toYaml $config }}
{{- end }}
