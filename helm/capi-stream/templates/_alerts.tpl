{{/*
The recording and alert rules, scoped by capi-stream.ruleSelector and tuned by
metrics.prometheusRule.alerts. rules/capi-stream-alerts.yaml is this template rendered for a plain
Prometheus job `capi-stream` (`make rules` regenerates it; a test keeps the two identical), and
promtool tests that file. Aggregations keep `namespace` and `job` (and `ad_account` where it is the
subject) so alerts route per team, and so rules can select their own recorded series with the
selector.
*/}}
{{- define "capi-stream.alertGroups" -}}
{{- $sel := include "capi-stream.ruleSelector" . }}
{{- $alerts := .Values.metrics.prometheusRule.alerts -}}
# Pinterest's resilience criteria per ad account across replicas (DESIGN §6), over the last hour of
# the resilience_events_total counters: the fleet-wide figures the per-replica gauges cannot give.
# A ratio without events to rate is NaN, and its criterion is met vacuously (offline-only accounts
# have no web or app events for IP + user agent; most accounts have hours without checkouts).
- name: capi-stream-resilience
  rules:
    - record: capi_stream:ad_account_resilience_events:increase1h
      expr: |
        sum by (namespace, job, ad_account, signal) (
          increase(capi_stream_resilience_events_total{ {{- $sel -}} }[1h])
        )
    # Offline events carry no IP address or user agent: Pinterest judges IP + UA on web and app.
    - record: capi_stream:ad_account_web_app_resilience_events:increase1h
      expr: |
        sum by (namespace, job, ad_account, signal) (
          increase(capi_stream_resilience_events_total{action_source!="offline",signal=~"all|ip_ua",{{ $sel }}}[1h])
        )
    - record: capi_stream:ad_account_ip_ua_ratio:1h
      expr: |
        capi_stream:ad_account_web_app_resilience_events:increase1h{signal="ip_ua",{{ $sel }}}
        / ignoring (signal)
        capi_stream:ad_account_web_app_resilience_events:increase1h{signal="all",{{ $sel }}}
    - record: capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h
      expr: |
        capi_stream:ad_account_resilience_events:increase1h{signal="bottom_funnel_em_or_maid",{{ $sel }}}
        / ignoring (signal)
        capi_stream:ad_account_resilience_events:increase1h{signal="bottom_funnel",{{ $sel }}}
    - record: capi_stream:ad_account_external_id_ratio:1h
      expr: |
        capi_stream:ad_account_resilience_events:increase1h{signal="external_id",{{ $sel }}}
        / ignoring (signal)
        capi_stream:ad_account_resilience_events:increase1h{signal="all",{{ $sel }}}
    # 1 when every criterion is met ("Good"), else 0; absent for an account without events in the
    # hour. `< bool` is 0 for NaN, so a criterion without events to rate does not count against it.
    - record: capi_stream:ad_account_resilient:1h
      expr: |
        1 - max by (namespace, job, ad_account) (
            label_replace(capi_stream:ad_account_ip_ua_ratio:1h{ {{- $sel -}} } < bool 0.9, "criterion", "ip_ua", "", "")
          or
            label_replace(capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h{ {{- $sel -}} } < bool 0.1, "criterion", "bottom_funnel_em_or_maid", "", "")
          or
            label_replace(capi_stream:ad_account_external_id_ratio:1h{ {{- $sel -}} } < bool 0.1, "criterion", "external_id", "", "")
        )
        and on (namespace, job, ad_account)
        capi_stream:ad_account_resilience_events:increase1h{signal="all",{{ $sel }}} > 0
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
    # One of Pinterest's resilience criteria is missed by an ad account across all replicas over
    # the last hour, one alert per criterion (label `criterion`), judged only when the events the
    # criterion is computed over reach minWindowEvents: a few events make a ratio of noise.
    - alert: CapiStreamResilienceLow
      expr: |
        label_replace(
          capi_stream:ad_account_ip_ua_ratio:1h{ {{- $sel -}} } < 0.9
          and on (namespace, job, ad_account)
          capi_stream:ad_account_web_app_resilience_events:increase1h{signal="all",{{ $sel }}} >= {{ .minWindowEvents }}
          , "criterion", "ip_ua", "", ""
        )
        or
        label_replace(
          capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h{ {{- $sel -}} } < 0.1
          and on (namespace, job, ad_account)
          capi_stream:ad_account_resilience_events:increase1h{signal="bottom_funnel",{{ $sel }}} >= {{ .minWindowEvents }}
          , "criterion", "bottom_funnel_em_or_maid", "", ""
        )
        or
        label_replace(
          capi_stream:ad_account_external_id_ratio:1h{ {{- $sel -}} } < 0.1
          and on (namespace, job, ad_account)
          capi_stream:ad_account_resilience_events:increase1h{signal="all",{{ $sel }}} >= {{ .minWindowEvents }}
          , "criterion", "external_id", "", ""
        )
      {{- include "capi-stream.alertMeta" (dict "context" $ "alert" .) | nindent 6 }}
      annotations:
        summary: "Ad account {{`{{ $labels.ad_account }}`}} misses Pinterest's {{`{{ $labels.criterion }}`}} resilience criterion"
        description: >-
          Only {{`{{ $value | humanizePercentage }}`}} of
          {{`{{ if eq $labels.criterion "ip_ua" }}`}}the web and app events of ad account
          {{`{{ $labels.ad_account }}`}} carried IP address and user agent over the last hour
          (Pinterest asks 90 %; offline events carry neither and are not counted){{`{{ else if eq $labels.criterion "bottom_funnel_em_or_maid" }}`}}the
          bottom-funnel events of ad account {{`{{ $labels.ad_account }}`}} carried a hashed e-mail
          or MAID over the last hour (Pinterest asks 10 %){{`{{ else }}`}}the events of ad account
          {{`{{ $labels.ad_account }}`}} carried external_id over the last hour (Pinterest asks
          10 %){{`{{ end }}`}}, across every replica of {{`{{ $labels.job }}`}}; it has stayed short
          for {{ .for }}. Match rates and attributed conversions suffer.
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
