{{/* Names and labels. */}}
{{- define "packs-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "packs-registry.fullname" -}}
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

{{- define "packs-registry.instanceLabels" -}}
app.kubernetes.io/name: {{ include "packs-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The serving pods (not the migrations Job's). */}}
{{- define "packs-registry.selectorLabels" -}}
{{ include "packs-registry.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "packs-registry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "packs-registry.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "packs-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "packs-registry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "packs-registry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "packs-registry.production" -}}
{{- if eq .Values.mode "production" }}true{{ end }}
{{- end }}

{{/* Where the container sees its configuration and its data. */}}
{{- define "packs-registry.configDir" -}}/etc/packs-registry{{- end }}
{{- define "packs-registry.secretsDir" -}}/var/run/secrets/packs-registry{{- end }}
{{- define "packs-registry.dataDir" -}}/var/lib/packs-registry{{- end }}
{{- define "packs-registry.containerPort" -}}5000{{- end }}

{{/*
The registry configuration as a dict: the user's `config`, with the keys the chart
owns set over it.
*/}}
{{- define "packs-registry.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $server := dict "listen" (printf "0.0.0.0:%s" (include "packs-registry.containerPort" .)) "data_dir" (include "packs-registry.dataDir" .) }}
{{- $storage := dict }}
{{- $metadata := dict }}
{{- if include "packs-registry.production" . }}
{{- if not (dig "storage" "s3" "bucket" "" $config) }}
{{- fail "config.storage.s3.bucket is required in production mode" }}
{{- end }}
{{- $_ := set $storage "backend" "s3" }}
{{- if and .Values.migrations.enabled (not (hasKey (default (dict) $config.metadata) "migrate_on_start")) }}
{{- $_ := set $metadata "migrate_on_start" false }}
{{- end }}
{{- else }}
{{- /* SQLite and the blobs under data_dir, the registry's defaults. */}}
{{- $_ := unset $config "storage" }}
{{- $_ := set $storage "backend" "fs" }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- $dir := printf "%s/tls" (include "packs-registry.secretsDir" .) }}
{{- $_ := set $server "tls" (dict "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir)) }}
{{- end }}
{{- $auth := dict }}
{{- if .Values.auth.rootKey.existingSecret }}
{{- $_ := set $auth "root_key_file" (printf "%s/root-key/root.key" (include "packs-registry.secretsDir" .)) }}
{{- end }}
{{- if .Values.auth.users.existingSecret }}
{{- $_ := set $auth "users_file" (printf "%s/users/users.toml" (include "packs-registry.secretsDir" .)) }}
{{- end }}
{{- if eq (dig "auth" "mode" "none" $config) "token" }}
{{- if not .Values.auth.rootKey.existingSecret }}
{{- fail "config.auth.mode token needs auth.rootKey.existingSecret (a Secret holding the output of `packs-registry token keygen`)" }}
{{- end }}
{{- if not (or .Values.tls.existingSecret (dig "server" "behind_tls_proxy" false $config)) }}
{{- fail "config.auth.mode token needs TLS: tls.existingSecret, or config.server.behind_tls_proxy when the ingress terminates TLS" }}
{{- end }}
{{- end }}
{{- $_ := set $config "auth" (mustMergeOverwrite (default (dict) $config.auth) $auth) }}
{{- $owned := dict "server" $server "storage" $storage "metadata" $metadata }}
{{- if gt (int .Values.metrics.port) 0 }}
{{- $_ := set $owned "telemetry" (dict "metrics_listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) }}
{{- end }}
{{- toJson (mustMergeOverwrite $config $owned) }}
{{- end }}

{{/*
TOML of a dict, for the registry's config file. (Helm's toToml writes every number
as a float, `30.0`, which the registry's integer keys refuse.) Keys are written in
order, values before sub-tables; null values are left out (the registry's default).
Call with (dict "table" $dict "path" "").
*/}}
{{- define "packs-registry.toml" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if and (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) }}
{{ $key }} = {{ include "packs-registry.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if and (kindIs "map" $value) (not (empty $value)) }}
{{- $sub := ternary $key (printf "%s.%s" $path $key) (eq $path "") }}

[{{ $sub }}]
{{- include "packs-registry.toml" (dict "table" $value "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "packs-registry.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if ne (float64 (int64 .)) (float64 .) }}{{ fail (printf "configuration numbers are integers (got %v)" .) }}{{ end }}
{{- int64 . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "packs-registry.tomlValue" $e }}{{ end }}]
{{- else if kindIs "map" . }}{{ $m := . }}{ {{- range $i, $k := keys $m | sortAlpha }}{{ if $i }},{{ end }} {{ $k }} = {{ include "packs-registry.tomlValue" (index $m $k) }}{{ end }} }
{{- else }}{{ fail (printf "cannot write %v (%s) in TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{- define "packs-registry.configToml" -}}
# Rendered by the packs-registry chart from its `config` values; the keys are the
# registry's own (examples/registry.toml).
{{- include "packs-registry.toml" (dict "table" (include "packs-registry.config" . | fromJson) "path" "") }}
{{- end }}

{{/* The seconds the pod gets to stop: always more than the drain needs. */}}
{{- define "packs-registry.terminationGracePeriodSeconds" -}}
{{- $drain := int64 (dig "server" "shutdown_timeout_secs" 30 .Values.config) }}
{{- $needed := add $drain (int64 .Values.preStopSleepSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 10 }}
{{- else if le (int64 .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + config.server.shutdown_timeout_secs (%d)" .Values.terminationGracePeriodSeconds $needed) }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Whether the chart keeps a credential in a Secret of its own. */}}
{{- define "packs-registry.ownsSecret" -}}
{{- if and (include "packs-registry.production" .) (or .Values.postgres.url .Values.s3.accessKeyId) }}true{{ end }}
{{- end }}

{{/*
Environment of the registry container: credentials from Secrets, then extraEnv.
Call with (dict "root" $ "s3" true); the migrations Job needs no S3 credentials.
*/}}
{{- define "packs-registry.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- if include "packs-registry.production" $root }}
- name: PACKS__METADATA__URL
  valueFrom:
    secretKeyRef:
      {{- if $v.postgres.url }}
      name: {{ .secret }}
      key: postgres-url
      {{- else if $v.postgres.existingSecret }}
      name: {{ $v.postgres.existingSecret }}
      key: {{ $v.postgres.existingSecretKey }}
      {{- else }}
      {{- fail "production mode needs postgres.url or postgres.existingSecret" }}
      {{- end }}
{{- if .s3 }}
{{- if $v.s3.accessKeyId }}
{{- if not $v.s3.secretAccessKey }}{{ fail "s3.accessKeyId needs s3.secretAccessKey" }}{{ end }}
- name: PACKS__STORAGE__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "packs-registry.fullname" $root }}
      key: s3-access-key-id
- name: PACKS__STORAGE__S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "packs-registry.fullname" $root }}
      key: s3-secret-access-key
{{- else if $v.s3.existingSecret }}
- name: PACKS__STORAGE__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.existingSecret }}
      key: {{ $v.s3.accessKeyIdKey }}
- name: PACKS__STORAGE__S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.existingSecret }}
      key: {{ $v.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The Secrets mounted into the registry's container (token mode and TLS), as volumes;
each is mounted at <secretsDir>/<name without "secret-">, its key as the file name the
configuration names. Mode 0440: the pod's fsGroup reads them, nobody else.
*/}}
{{- define "packs-registry.secretVolumes" -}}
{{- $v := .Values }}
{{- if $v.tls.existingSecret }}
- name: secret-tls
  secret:
    secretName: {{ $v.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.tls.certKey }}
        path: tls.crt
      - key: {{ $v.tls.keyKey }}
        path: tls.key
{{- end }}
{{- if $v.auth.rootKey.existingSecret }}
- name: secret-root-key
  secret:
    secretName: {{ $v.auth.rootKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.auth.rootKey.key }}
        path: root.key
{{- end }}
{{- if $v.auth.users.existingSecret }}
- name: secret-users
  secret:
    secretName: {{ $v.auth.users.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.auth.users.key }}
        path: users.toml
{{- end }}
{{- end }}

{{/* A probe, over HTTPS when the registry serves TLS itself. */}}
{{- define "packs-registry.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .root.Values.tls.existingSecret $probe.httpGet (not (hasKey $probe.httpGet "scheme")) }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
