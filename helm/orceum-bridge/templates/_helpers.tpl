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

{{/* Every object's labels: the selector labels, the chart's and commonLabels. */}}
{{- define "orceum-bridge.labels" -}}
{{ include "orceum-bridge.selectorLabels" . }}
{{ include "orceum-bridge.unselectedLabels" . }}
{{- end }}

{{/* The labels that no selector looks at (the helm test pod has these and not the selector's). */}}
{{- define "orceum-bridge.unselectedLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* repository@digest when image.digest is set (the tag then only names the version label), else repository:tag. */}}
{{- define "orceum-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "orceum-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orceum-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret mounted under secrets.mountPath; empty when the app secrets come from the environment. */}}
{{- define "orceum-bridge.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "orceum-bridge.fullname" . }}
{{- else }}
{{- .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/*
The bridge container's environment (`env:` and `envFrom:`), shared by the Deployment and the
helm test pod so that `check --connect` resolves the config as the bridge does.
*/}}
{{- define "orceum-bridge.containerEnv" -}}
env:
  - name: RUST_LOG
    value: {{ .Values.logLevel | quote }}
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The bridge container's volumeMounts: the config, the Secret (if any), extraVolumeMounts. */}}
{{- define "orceum-bridge.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /etc/orceum-bridge
    readOnly: true
  {{- if include "orceum-bridge.secretName" . }}
  # No subPath: Kubernetes then updates the files in place when the Secret changes.
  - name: secrets
    mountPath: {{ .Values.secrets.mountPath }}
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The pod's volumes: the ConfigMap, the Secret (if any), extraVolumes. */}}
{{- define "orceum-bridge.volumes" -}}
volumes:
  - name: config
    configMap:
      name: {{ include "orceum-bridge.fullname" . }}
  {{- with include "orceum-bridge.secretName" . }}
  - name: secrets
    secret:
      secretName: {{ . }}
      defaultMode: 0440
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
One probe of the bridge container: probes.<name> as given when it has its own handler (httpGet,
exec, tcpSocket or grpc: a whole-probe override), else an httpGet of `path` on the metrics port
with the given timings. Call with (dict "probe" … "path" …).
*/}}
{{- define "orceum-bridge.probe" -}}
{{- $probe := omit .probe "enabled" }}
{{- if not (or $probe.httpGet $probe.exec $probe.tcpSocket $probe.grpc) }}
httpGet:
  path: {{ .path }}
  port: metrics
{{- end }}
{{- with $probe }}
{{ toYaml . }}
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
{{- $mount := printf "%s/" (trimSuffix "/" .Values.secrets.mountPath) }}
{{- if and (not (include "orceum-bridge.secretName" .)) (contains $mount (include "orceum-bridge.configText" .)) }}
{{- fail (printf "secrets: the config reads files under secrets.mountPath (%s) but no Secret is mounted there; set secrets.existingSecret to a Secret holding one key per app (its whs_ secret), or secrets.create=true with secrets.values for a trial, or read the secrets from the environment (`secret: { env: NAME }` with env / envFrom)" $mount) }}
{{- end }}
{{- $envNames := list }}
{{- range .Values.env }}{{ $envNames = append $envNames .name }}{{ end }}
{{- if not .Values.envFrom }}
{{- range $app, $a := ($config.apps | default dict) }}
{{- if kindIs "map" $a }}
{{- $secret := $a.secret }}
{{- if and (kindIs "map" $secret) (hasKey $secret "env") (not (has (toString $secret.env) $envNames)) }}
{{- fail (printf "config apps.%s.secret.env: %s is not set in the container; add it to env (e.g. valueFrom.secretKeyRef) or envFrom" $app $secret.env) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $taken := list "/etc/orceum-bridge" }}
{{- if include "orceum-bridge.secretName" . }}{{ $taken = append $taken (trimSuffix "/" .Values.secrets.mountPath) }}{{ end }}
{{- range $i, $m := .Values.extraVolumeMounts }}
{{- $at := trimSuffix "/" (toString $m.mountPath) }}
{{- range $taken }}
{{- if or (eq $at .) (hasPrefix (printf "%s/" .) $at) }}
{{- fail (printf "extraVolumeMounts[%d].mountPath %s: %s is the chart's own mount (the config, or the Secret at secrets.mountPath), which Kubernetes cannot mount into; mount elsewhere" $i $m.mountPath .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $_ := .Values.commonLabels }}
{{- if or (hasPrefix "app.kubernetes.io/" $key) (eq $key "helm.sh/chart") }}
{{- fail (printf "commonLabels.%s: the chart sets this label itself; choose another key" $key) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (a PodDisruptionBudget takes one)" }}
{{- end }}
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
