{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "streamspace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name: "<release>-streamspace", or the release name when it already says streamspace. */}}
{{- define "streamspace.fullname" -}}
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

{{- define "streamspace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: include "streamspace.selectorLabels" (dict "ctx" $ "component" "control-plane") */}}
{{- define "streamspace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamspace.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "streamspace.labels" -}}
helm.sh/chart: {{ include "streamspace.chart" .ctx }}
{{ include "streamspace.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: streamspace
{{- end }}

{{- define "streamspace.secretName" -}}
{{- default (include "streamspace.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "streamspace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-agent" (include "streamspace.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamspace.sessionNamespace" -}}
{{- default .Release.Namespace .Values.agent.sessionNamespace }}
{{- end }}

{{- define "streamspace.controlPlaneImage" -}}
{{- printf "%s:%s" .Values.image.controlPlane.repository (default .Chart.AppVersion .Values.image.controlPlane.tag) }}
{{- end }}

{{- define "streamspace.agentImage" -}}
{{- printf "%s:%s" .Values.image.agent.repository (default .Chart.AppVersion .Values.image.agent.tag) }}
{{- end }}

{{/* Pod and container security context shared by every StreamSpace container (image user 10001). */}}
{{- define "streamspace.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "streamspace.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Environment of every control-plane image container (daphne, celery, migrate). */}}
{{- define "streamspace.controlPlaneEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "streamspace.fullname" . }}
env:
  {{- range $key := list "SECRET_KEY" "DATABASE_URL" "REDIS_URL" "STREAMSPACE_ENCRYPTION_KEY" }}
  - name: {{ $key }}
    valueFrom:
      secretKeyRef:
        name: {{ include "streamspace.secretName" $ }}
        key: {{ $key }}
        {{- if or (eq $key "STREAMSPACE_ENCRYPTION_KEY") (and (eq $key "REDIS_URL") $.Values.redisSentinel.hosts) }}
        optional: true
        {{- end }}
  {{- end }}
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
  - name: ALLOWED_HOSTS
    value: {{ printf "%s,$(POD_IP)" .Values.config.allowedHosts | quote }}
{{- end }}

{{/* Init container: wait until the migrate Job has applied every migration. */}}
{{- define "streamspace.waitForMigrations" -}}
- name: wait-for-migrations
  image: {{ include "streamspace.controlPlaneImage" . }}
  imagePullPolicy: {{ .Values.image.controlPlane.pullPolicy }}
  command:
    - sh
    - -c
    - until python manage.py migrate --check >/dev/null; do echo "waiting for database migrations"; sleep 5; done
  {{- include "streamspace.controlPlaneEnv" . | nindent 2 }}
  securityContext:
    {{- include "streamspace.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
