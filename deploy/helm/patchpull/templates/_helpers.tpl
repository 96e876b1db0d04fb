{{/*
Names. With the release named "patchpull" (as docs/deployment.md installs it) every object
has the name deploy/ gives it: patchpull, patchpull-config, patchpull-store, patchpull-tls...
*/}}
{{- define "patchpull.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "patchpull.fullname" -}}
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

{{- define "patchpull.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "patchpull.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "patchpull.selectorLabels" -}}
app.kubernetes.io/name: {{ include "patchpull.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector of a node DaemonSet; the component is its suffix. */}}
{{- define "patchpull.componentLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "patchpull.componentSelector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "patchpull.componentSelector" -}}
app.kubernetes.io/name: {{ include "patchpull.name" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "patchpull.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "patchpull.tlsSecret" -}}
{{- default (printf "%s-tls" (include "patchpull.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "patchpull.adminSecret" -}}
{{- default (printf "%s-admin" (include "patchpull.fullname" .)) .Values.adminToken.secretName }}
{{- end }}

{{/* The host[:port] nodes pull from: patchpull's address as the nodes see it. */}}
{{- define "patchpull.address" -}}
{{- required "address: the host[:port] your nodes reach patchpull at" .Values.address }}
{{- end }}

{{/* The config file's mount point and name, as deploy/ mounts them. */}}
{{- define "patchpull.configFile" -}}
/etc/patchpull/config/patchpull.toml
{{- end }}

{{/* Upstreams that take credentials from a Secret. */}}
{{- define "patchpull.withCredentials" -}}
{{- range .Values.upstreams }}{{ if .credentials }}{{ .name }} {{ end }}{{ end }}
{{- end }}

{{/*
patchpull.toml from a map, as TOML: scalars and lists of scalars first (JSON's forms of
strings, numbers, booleans and arrays are TOML's too, and whole numbers stay whole, which
Helm's toToml would turn into floats: `workers = 2.0` is not a whole number), then tables,
then arrays of tables. A null value leaves the key out. Call with (dict "table" MAP "path" "").
*/}}
{{- define "patchpull.toml" -}}
{{- $path := .path }}
{{- range $key, $value := .table }}
{{- if and (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) (not (and (kindIs "slice" $value) $value (kindIs "map" (first $value)))) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- $here := ternary $key (printf "%s.%s" $path $key) (eq $path "") }}
{{- if kindIs "map" $value }}

[{{ $here }}]
{{- include "patchpull.toml" (dict "table" $value "path" $here) }}
{{- else if and (kindIs "slice" $value) $value (kindIs "map" (first $value)) }}
{{- range $value }}

[[{{ $here }}]]
{{- include "patchpull.toml" (dict "table" . "path" $here) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}


{{/*
The whole configuration: values' `config`, with what the chart knows filled in (TLS paths,
upstreams, the admission registry and the release's namespace, the HA keys).
*/}}
{{- define "patchpull.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $server := default dict $config.server }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%v" .Values.service.port) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $server "tls_cert" "/etc/patchpull/tls/tls.crt" }}
{{- $_ := set $server "tls_key" "/etc/patchpull/tls/tls.key" }}
{{- end }}
{{- $_ := set $config "server" $server }}
{{- $storage := default dict $config.storage }}
{{- $_ := set $storage "path" "/var/lib/patchpull" }}
{{- if ne .Values.storage.backend "local" }}
{{- $_ := set $storage "backend" .Values.storage.backend }}
{{- end }}
{{- if .Values.storage.registry.url }}
{{- $registry := dict "url" .Values.storage.registry.url "repository_prefix" .Values.storage.registry.repositoryPrefix }}
{{- $_ := set $storage "registry" (merge $registry (default dict .Values.storage.registry.extra)) }}
{{- end }}
{{- $_ := set $config "storage" $storage }}
{{- if .Values.coordination.redisUrl }}
{{- $_ := set $config "coordination" (dict "redis_url" .Values.coordination.redisUrl) }}
{{- end }}
{{- $admission := default dict $config.admission }}
{{- $_ := set $admission "enabled" .Values.webhook.enabled }}
{{- $_ := set $admission "registry" (include "patchpull.address" .) }}
{{- $_ := set $admission "namespaces_exclude" (concat .Values.webhook.excludeNamespaces (list .Release.Namespace) | uniq | sortAlpha) }}
{{- $_ := set $config "admission" $admission }}
{{- $upstreams := list }}
{{- range .Values.upstreams }}
{{- $upstreams = append $upstreams (omit . "credentials") }}
{{- end }}
{{- $_ := set $config "upstream" $upstreams }}
{{- include "patchpull.toml" (dict "table" $config "path" "") | trim }}
{{- end }}

{{/*
Upstream credentials from their Secrets: each user name and password in a variable of its
own (not PATCHPULL_*, which patchpull would read as keys), then PATCHPULL_UPSTREAM, the whole
upstream list as an inline TOML array (the environment cannot address one entry), whose
$(VAR) references the kubelet replaces with those variables' values.
*/}}
{{- define "patchpull.credentialsEnv" -}}
{{- $entries := list }}
{{- range $i, $upstream := .Values.upstreams }}
{{- $fields := list }}
{{- range $key, $value := omit $upstream "credentials" }}
{{- $fields = append $fields (printf "%s = %s" $key (toJson $value)) }}
{{- end }}
{{- with $upstream.credentials }}
- name: UPSTREAM_{{ $i }}_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "upstreams[%d].credentials.secretName" $i) .secretName }}
      key: {{ default "username" .usernameKey }}
- name: UPSTREAM_{{ $i }}_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ default "password" .passwordKey }}
{{- $fields = append $fields (printf "username = \"$(UPSTREAM_%d_USERNAME)\"" $i) }}
{{- $fields = append $fields (printf "password = \"$(UPSTREAM_%d_PASSWORD)\"" $i) }}
{{- end }}
{{- $entries = append $entries (printf "{%s}" (join ", " $fields)) }}
{{- end }}
- name: PATCHPULL_UPSTREAM
  value: {{ printf "[%s]" (join ", " $entries) | quote }}
{{- end }}
