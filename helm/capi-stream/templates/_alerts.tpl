{{/*
The alert rules, scoped by capi-stream.ruleSelector and tuned by metrics.prometheusRule.alerts.
rules/capi-stream-alerts.yaml is this template rendered for a plain Prometheus job `capi-stream`
(`make rules` regenerates it; a test keeps the two identical), and promtool tests that file.
Aggregations keep `namespace` (and `ad_account` where it is the subject) so alerts route per team.
*/}}
{{- define "capi-stream.alertGroups" -}}
{{- $sel := include "capi-stream.ruleSelector" . }}
{{- $alerts := .Values.metrics.prometheusRule.alerts -}}
- name: capi-stream
  rules:
  {{- with $alerts.CapiStreamDown }}{{ if .enabled }}
    # No replica is up, or none is scraped at all (crash loop, image or scheduling failure, deleted
    # deployment, broken scrape config): every other alert is blind then, kubernetes-mixin style.
    - alert: CapiStreamDown
      expr: |
        max by (namespace, job) (up{ {{- $sel -}} }) == 0
        or
        absent(up{ {{- $sel -}} })
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream {{`{{ $labels.job }}`}} has no replica up"
        description: >-
          No target of {{`{{ $labels.job }}`}} in namespace {{`{{ $labels.namespace }}`}} has
          answered a scrape for {{ .for }}: the pods crash-loop, cannot start, or are not scraped.
          Nothing is delivered to Pinterest; events wait in Kafka.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamDown") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamConsumerLagGrowing }}{{ if .enabled }}
    # Lag per topic keeps rising and is not trivially small: capi-stream consumes more slowly
    # than producers write, so conversions reach Pinterest later and later.
    - alert: CapiStreamConsumerLagGrowing
      expr: |
        sum by (namespace, job, topic) (deriv(capi_stream_consumer_lag{ {{- $sel -}} }[5m])) > 0
        and
        sum by (namespace, job, topic) (capi_stream_consumer_lag{ {{- $sel -}} }) > {{ .minLag }}
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream lag on {{`{{ $labels.topic }}`}} has been growing for {{ .for }}"
        description: >-
          Consumer lag of {{`{{ $labels.job }}`}} on topic {{`{{ $labels.topic }}`}} keeps rising
          ({{`{{ $value | humanize }}`}} messages per second). Events reach Pinterest later and later;
          after one hour Pinterest reports them as offline, after seven days it rejects them.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamConsumerLagGrowing") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamDeadLetterRateHigh }}{{ if .enabled }}
    # A share of consumed messages ends in the dead-letter topic, and enough of them that a single
    # bad message in a quiet hour does not page.
    - alert: CapiStreamDeadLetterRateHigh
      expr: |
        (
          sum by (namespace, job) (rate(capi_stream_dead_letters_total{ {{- $sel -}} }[10m]))
          /
          sum by (namespace, job) (rate(capi_stream_events_consumed_total{ {{- $sel -}} }[10m]))
        ) > {{ .ratio }}
        and
        sum by (namespace, job) (rate(capi_stream_dead_letters_total{ {{- $sel -}} }[10m])) > {{ .minRate }}
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream dead-letters {{`{{ $value | humanizePercentage }}`}} of its messages"
        description: >-
          {{`{{ $labels.job }}`}} sent {{`{{ $value | humanizePercentage }}`}} of consumed messages to the
          dead-letter topic over the last 10 minutes. Those conversions are not reported to
          Pinterest until they are fixed and replayed (`capi-stream dlq inspect|replay`).
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamDeadLetterRateHigh") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamSetupError }}{{ if .enabled }}
    # 401/403/404 or a bad ad account: the account is paused, nothing of it is delivered.
    - alert: CapiStreamSetupError
      expr: max by (namespace, job, ad_account) (capi_stream_setup_error{ {{- $sel -}} }) > 0
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream cannot send for ad account {{`{{ $labels.ad_account }}`}} (setup error)"
        description: >-
          Pinterest refuses requests for ad account {{`{{ $labels.ad_account }}`}} with a token or
          account error (HTTP status in capi_stream_setup_error_status). The account is paused
          and its events wait in Kafka; nothing is lost, but nothing is delivered until the
          token or account is fixed.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamSetupError") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamRateLimited }}{{ if .enabled }}
    # A share of an account's requests answered 429: the request budget is too small for the
    # traffic, so delivery slows and events may exhaust their retry budget.
    - alert: CapiStreamRateLimited
      expr: |
        (
          sum by (namespace, job, ad_account) (rate(capi_stream_requests_total{code="429",{{ $sel }}}[5m]))
          /
          sum by (namespace, job, ad_account) (rate(capi_stream_requests_total{ {{- $sel -}} }[5m]))
        ) > {{ .ratio }}
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "Pinterest throttles capi-stream for ad account {{`{{ $labels.ad_account }}`}}"
        description: >-
          {{`{{ $value | humanizePercentage }}`}} of requests for ad account {{`{{ $labels.ad_account }}`}}
          are answered 429 (rate limited) for {{ .for }}. Delivery is slowed; events that stay
          throttled beyond the retry budget are dead-lettered as retries_exhausted.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamRateLimited") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamNoDeliveries }}{{ if .enabled }}
    # Messages arrive (consumed, or waiting as lag while consumption is paused) but nothing is
    # delivered. Silent when (nearly) everything consumed is skipped on purpose, e.g. a source of
    # `identify` calls only: the 1 % margin covers messages consumed but not yet settled.
    - alert: CapiStreamNoDeliveries
      expr: |
        (
          sum by (namespace, job) (rate(capi_stream_events_consumed_total{ {{- $sel -}} }[10m])) > 0
          or
          sum by (namespace, job) (capi_stream_consumer_lag{ {{- $sel -}} }) > 0
        )
        unless
        sum by (namespace, job) (rate(capi_stream_events_total{outcome="delivered",{{ $sel }}}[10m])) > 0
        unless
        (
          sum by (namespace, job) (rate(capi_stream_events_total{outcome="skipped",{{ $sel }}}[10m])) > 0
          >=
          0.99 * sum by (namespace, job) (rate(capi_stream_events_consumed_total{ {{- $sel -}} }[10m]))
        )
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream delivers nothing to Pinterest while events arrive"
        description: >-
          {{`{{ $labels.job }}`}} has events to send but has delivered none for {{ .for }}. Check
          setup errors, throttling, Pinterest outages and the dead-letter rate.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamNoDeliveries") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamResilienceLow }}{{ if .enabled }}
    # Pinterest's resilience status over the sliding window (default 1 h) is not "Good", with
    # enough events in the window for the ratios to mean something.
    - alert: CapiStreamResilienceLow
      expr: |
        capi_stream_resilience_good{ {{- $sel -}} } == 0
        and
        capi_stream_resilience_window_events{ {{- $sel -}} } >= {{ .minWindowEvents }}
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream events fall short of Pinterest's resilience thresholds"
        description: >-
          On {{`{{ $labels.instance }}`}} the events delivered over the last window miss at least one
          threshold: 90 % with IP and user agent, 10 % of bottom-funnel events with hashed
          e-mail or MAID, 10 % with external_id (see capi_stream_identifier_coverage_ratio).
          Match rates and attributed conversions suffer.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamResilienceLow") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamNotReady }}{{ if .enabled }}
    # /readyz false: the configuration did not load, the consumer has not joined its group, or
    # the process is draining and not finishing. (No partitions and setup errors keep it ready.)
    - alert: CapiStreamNotReady
      expr: capi_stream_ready{ {{- $sel -}} } == 0
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "capi-stream {{`{{ $labels.instance }}`}} has not been ready for {{ .for }}"
        description: >-
          /readyz on {{`{{ $labels.instance }}`}} answers not ready: its consumer has not joined
          the group (brokers unreachable, authentication or ACLs) or it is draining. Events of
          the partitions it should own are not being delivered.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamNotReady") }}
  {{- end }}{{ end }}
  {{- with $alerts.CapiStreamEventQualityNeedsImprovement }}{{ if .enabled }}
    # Pinterest's own verdict: it rates the Conversions API events of an ad account and
    # platform NEEDS_IMPROVEMENT (0) over the last day, as read by the quality poller
    # (pinterest.quality.enabled). Every replica reads the same answer, hence the max: it fires
    # only when all of them saw it. Pinterest's figure moves slowly and the poller reads it every
    # 30 minutes by default, hence a long `for`.
    - alert: CapiStreamEventQualityNeedsImprovement
      expr: |
        max by (namespace, job, ad_account, platform) (
          capi_stream_quality_status{ingestion_source="CONVERSIONS_API",lookback="1d",{{ $sel }}}
        ) == 0
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "Pinterest rates the {{`{{ $labels.platform }}`}} conversions of ad account {{`{{ $labels.ad_account }}`}} NEEDS_IMPROVEMENT"
        description: >-
          Pinterest's Event Quality Score for the Conversions API events of ad account
          {{`{{ $labels.ad_account }}`}} on {{`{{ $labels.platform }}`}} has been NEEDS_IMPROVEMENT
          (last day) for {{ .for }}. Too few events carry the identifiers Pinterest matches on, so
          fewer conversions are attributed. `capi-stream quality` lists the issues per component
          and event type.
        runbook_url: {{ include "capi-stream.runbookUrl" (dict "context" $ "name" "CapiStreamEventQualityNeedsImprovement") }}
  {{- end }}{{ end }}
{{- end }}

{{/* `for` and `labels` of one alert: severity, then additionalRuleLabels, then its own labels. */}}
{{- define "capi-stream.alertMeta" -}}
{{- $labels := dict "severity" .alert.severity }}
{{- $labels = mergeOverwrite $labels (deepCopy .context.Values.metrics.prometheusRule.additionalRuleLabels) (deepCopy (.alert.labels | default dict)) -}}
for: {{ .alert.for }}
labels:
  {{- toYaml $labels | nindent 2 }}
{{- end }}

{{- define "capi-stream.runbookUrl" -}}
{{- printf "%s#%s" .context.Values.metrics.prometheusRule.runbookUrl (lower .name) | quote }}
{{- end }}
