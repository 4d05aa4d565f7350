{{/*
The pod of one fakemx: `fakemx run` (the image's command) configured by FAKEMX_*
variables, its store in an emptyDir, the API token from a Secret as a file, the extra
profiles from the ConfigMap. Ready and live when fakemx-healthcheck (the image's
health check) says so: it asks the API, so a profile that refuses every SMTP
connection is still ready. Called with (dict "root" $ "name" NAME "mode" serve|lab
"profile" PROFILE).
*/}}
{{- define "fakemx.pod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "fakemx.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001  # the image's fakemx user (Dockerfile)
    fsGroup: 10001
  containers:
    - name: fakemx
      image: {{ include "fakemx.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["fakemx", "run"]  # the image's CMD, spelled out: no ENTRYPOINT to add args to
      env:
        - {name: FAKEMX_MODE, value: {{ .mode | quote }}}
        - {name: FAKEMX_HOST, value: "0.0.0.0"}
        {{- if eq .mode "lab" }}
        - {name: FAKEMX_BASE_PORT, value: {{ $root.Values.lab.basePort | quote }}}
        {{- else }}
        - {name: FAKEMX_PROFILE, value: {{ .profile | quote }}}
        - {name: FAKEMX_PORT, value: {{ $root.Values.port | quote }}}
        {{- end }}
        - {name: FAKEMX_STATE_DIR, value: /var/lib/fakemx}
        - {name: FAKEMX_TIME_SCALE, value: {{ $root.Values.timeScale | quote }}}
        - {name: FAKEMX_LOG_FORMAT, value: {{ $root.Values.logFormat | quote }}}
        - {name: FAKEMX_HOSTNAME, value: {{ $root.Values.hostname | quote }}}
        {{- if $root.Values.api.enabled }}
        - {name: FAKEMX_API, value: {{ printf "0.0.0.0:%v" $root.Values.api.port | quote }}}
        - {name: FAKEMX_API_TOKEN_FILE, value: /run/secrets/fakemx/{{ $root.Values.api.key }}}
        {{- else }}
        - {name: FAKEMX_API, value: ""}
        {{- end }}
        {{- if $root.Values.profiles }}
        - {name: FAKEMX_PROFILES, value: /etc/fakemx/profiles}
        {{- end }}
        {{- range $name, $value := $root.Values.env }}
        - {name: {{ $name }}, value: {{ $value | quote }}}
        {{- end }}
      ports:
        {{- if eq .mode "lab" }}
        - {name: smtp, containerPort: {{ $root.Values.lab.basePort }}}
        {{- else }}
        - {name: smtp, containerPort: {{ $root.Values.port }}}
        {{- end }}
        {{- if $root.Values.api.enabled }}
        - {name: api, containerPort: {{ $root.Values.api.port }}}
        {{- end }}
      readinessProbe:
        exec: {command: ["fakemx-healthcheck"]}
        periodSeconds: 2
        failureThreshold: 15
      livenessProbe:
        exec: {command: ["fakemx-healthcheck"]}
        periodSeconds: 10
        failureThreshold: 3
      resources:
        {{- toYaml $root.Values.resources | nindent 8 }}
      volumeMounts:
        - {name: state, mountPath: /var/lib/fakemx}
        {{- if $root.Values.api.enabled }}
        - {name: api-token, mountPath: /run/secrets/fakemx, readOnly: true}
        {{- end }}
        {{- if $root.Values.profiles }}
        - {name: profiles, mountPath: /etc/fakemx/profiles, readOnly: true}
        {{- end }}
  volumes:
    - name: state
      emptyDir: {}
    {{- if $root.Values.api.enabled }}
    - name: api-token
      secret: {secretName: {{ include "fakemx.apiSecret" $root }}}
    {{- end }}
    {{- if $root.Values.profiles }}
    - name: profiles
      configMap: {name: {{ $root.Release.Name }}-profiles}
    {{- end }}
{{- end -}}
