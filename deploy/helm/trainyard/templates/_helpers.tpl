{{/*
The chart's name, truncated to 63 characters (a DNS label).
*/}}
{{- define "trainyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, with the chart's name after it unless the
release name already contains it.
*/}}
{{- define "trainyard.fullname" -}}
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

{{- define "trainyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trainyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trainyard.labels" -}}
helm.sh/chart: {{ include "trainyard.chart" . }}
{{ include "trainyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- end }}

{{- define "trainyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trainyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Whether the metadata database is an external PostgreSQL (a URL value or a Secret).
*/}}
{{- define "trainyard.externalDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end }}
{{- end }}

{{/*
The Secret and key holding TRAINYARD_DATABASE_URL: the user's, else the chart's own.
*/}}
{{- define "trainyard.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "trainyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "trainyard.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/*
The data volume is a PersistentVolumeClaim: persistence on and a single server (or none,
scaled down: the claim stays). Several servers each get an emptyDir for their spools;
their state is in PostgreSQL and S3.
*/}}
{{- define "trainyard.usesClaim" -}}
{{- if and .Values.persistence.enabled (le (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "trainyard.claimName" -}}
{{- default (include "trainyard.fullname" .) .Values.persistence.existingClaim }}
{{- end }}

{{/*
Refuses values that would make a broken or unsafe release. Included by the Deployment, so
`helm template`/`install` stop with the message.
*/}}
{{- define "trainyard.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if lt $replicas 0 }}
{{- fail "replicaCount must be 0 or more" }}
{{- end }}
{{- if and .Values.database.url (not (regexMatch "^postgres(ql)?://" .Values.database.url)) }}
{{- fail "database.url must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB); leave it empty for SQLite in the data volume" }}
{{- end }}
{{- if gt $replicas 1 }}
{{- if not (include "trainyard.externalDatabase" .) }}
{{- fail "replicaCount > 1 needs an external PostgreSQL (database.existingSecret or database.url): SQLite is single-server" }}
{{- end }}
{{- if not .Values.s3.bucket }}
{{- fail "replicaCount > 1 needs S3 blobs (s3.bucket): blobs in a server's data volume are not seen by the others" }}
{{- end }}
{{- if not .Values.adminToken.existingSecret }}
{{- fail "replicaCount > 1 needs adminToken.existingSecret: a generated token would be written to one server's emptyDir and lost with its pod" }}
{{- end }}
{{- if .Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim cannot be shared by several servers (each needs a data dir of its own); with replicaCount > 1 every server gets an emptyDir" }}
{{- end }}
{{- end }}
{{- if regexMatch "(?m)^\\s*database_url\\s*=" .Values.config.toml }}
{{- fail "config.toml sets database_url: the URL holds a password and the ConfigMap is no place for it; use database.existingSecret or database.url" }}
{{- end }}
{{- end }}
