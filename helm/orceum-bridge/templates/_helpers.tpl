{{/* Names and labels. */}}
{{- define "orceum-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orceum-bridge.fullname" -}}
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

{{- define "orceum-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orceum-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "orceum-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "orceum-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "orceum-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orceum-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret mounted under secrets.mountPath. */}}
{{- define "orceum-bridge.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "orceum-bridge.fullname" . }}
{{- else }}
{{- .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* The config file's text, exactly as mounted. */}}
{{- define "orceum-bridge.configText" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{/* The config as a map, for the checks below and the KEDA defaults. */}}
{{- define "orceum-bridge.configMap" -}}
{{- if kindIs "string" .Values.config }}
{{- $parsed := fromYaml .Values.config }}
{{- if hasKey $parsed "Error" }}
{{- fail (printf "config: not valid YAML: %s" (get $parsed "Error")) }}
{{- end }}
{{- toJson $parsed }}
{{- else }}
{{- toJson .Values.config }}
{{- end }}
{{- end }}

{{/*
Whole seconds in a bridge duration (`250ms`, `10s`, `5m`, `1m 30s`, `0`), rounded up.
Renders "unknown" for anything else (e.g. a ${VAR}).
*/}}
{{- define "orceum-bridge.seconds" -}}
{{- $text := toString . | trim }}
{{- $total := 0 }}
{{- $ok := true }}
{{- if ne $text "0" }}
{{- range $part := splitList " " $text }}
{{- if $part }}
{{- if not (regexMatch "^[0-9]+(ms|s|sec|secs|m|min|mins|h|hr|hrs)$" $part) }}
{{- $ok = false }}
{{- else }}
{{- $n := regexFind "^[0-9]+" $part | atoi }}
{{- $unit := regexReplaceAll "^[0-9]+" $part "" }}
{{- if eq $unit "ms" }}{{ $total = add $total (div (add $n 999) 1000) }}
{{- else if has $unit (list "s" "sec" "secs") }}{{ $total = add $total $n }}
{{- else if has $unit (list "m" "min" "mins") }}{{ $total = add $total (mul $n 60) }}
{{- else }}{{ $total = add $total (mul $n 3600) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $ok }}{{ $total }}{{ else }}unknown{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: longer than the drain the bridge does on SIGTERM
(delivery.shutdown_timeout, then up to orceum.timeout for the last push, then leaving the group).
*/}}
{{- define "orceum-bridge.terminationGracePeriodSeconds" -}}
{{- $config := include "orceum-bridge.configMap" . | fromJson }}
{{- $delivery := $config.delivery | default dict }}
{{- $orceum := $config.orceum | default dict }}
{{- $drain := include "orceum-bridge.seconds" ($delivery.shutdown_timeout | default "30s") }}
{{- $push := include "orceum-bridge.seconds" ($orceum.timeout | default "10s") }}
{{- $set := .Values.terminationGracePeriodSeconds }}
{{- if or (eq $drain "unknown") (eq $push "unknown") }}
{{- if kindIs "invalid" $set }}
{{- fail "terminationGracePeriodSeconds: cannot read delivery.shutdown_timeout / orceum.timeout from the config; set terminationGracePeriodSeconds above their sum" }}
{{- end }}
{{- $set }}
{{- else }}
{{- $needed := add (atoi $drain) (atoi $push) }}
{{- if kindIs "invalid" $set }}
{{- add $needed 15 }}
{{- else if le (int $set) $needed }}
{{- fail (printf "terminationGracePeriodSeconds: %d is not longer than the drain (delivery.shutdown_timeout + orceum.timeout = %ds); pods would be killed mid-drain. Set it above %d, or leave it null to compute it" (int $set) $needed $needed) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Kafka sources of the config, as a list of {name, kafka}. */}}
{{- define "orceum-bridge.kafkaSources" -}}
{{- $config := include "orceum-bridge.configMap" . | fromJson }}
{{- $out := list }}
{{- range $name, $source := ($config.sources | default dict) }}
{{- if and (kindIs "map" $source) (hasKey $source "kafka") }}
{{- $out = append $out (dict "name" $name "kafka" $source.kafka) }}
{{- end }}
{{- end }}
{{- toJson (dict "sources" $out) }}
{{- end }}

{{/* Fails on values that cannot work together. */}}
{{- define "orceum-bridge.checks" -}}
{{- $config := include "orceum-bridge.configMap" . | fromJson }}
{{- $observability := $config.observability | default dict }}
{{- $listen := $observability.listen | default "0.0.0.0:9464" | toString }}
{{- if not (contains "${" $listen) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if ne $port (toString .Values.metrics.port) }}
{{- fail (printf "metrics.port (%v) must be the port of config.observability.listen (%s): probes and scrapes use it" .Values.metrics.port $listen) }}
{{- end }}
{{- end }}
{{- if and (not .Values.secrets.create) (not .Values.secrets.existingSecret) }}
{{- fail "secrets: set secrets.existingSecret to a Secret holding one key per app (its whs_ secret), or secrets.create=true with secrets.values for a trial" }}
{{- end }}
{{- if .Values.kafka.staticMembership }}
{{- range (include "orceum-bridge.kafkaSources" . | fromJson).sources }}
{{- $props := .kafka.properties | default dict }}
{{- if not (hasKey $props "group.instance.id") }}
{{- fail (printf "kafka.staticMembership: add `group.instance.id: ${POD_NAME}` to config sources.%s.kafka.properties" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
