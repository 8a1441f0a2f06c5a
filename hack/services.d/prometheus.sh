# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# Prometheus: scrapes itself and whatever the tests list in targets/*.json, every second. The remote-write
# receiver and the admin API are on so tests can also push samples or delete series.
svc_packages() { command -v prometheus >/dev/null || echo prometheus; }

svc_start() {
  render "$SERVICES_D/prometheus.yml.in" "$SVC_DIR/prometheus.yml" PORT="$PROMETHEUS_PORT" DIR="$SVC_DIR"
  mkdir -p "$SVC_DIR/data" "$SVC_DIR/targets"
  spawn prometheus \
    --config.file="$SVC_DIR/prometheus.yml" \
    --storage.tsdb.path="$SVC_DIR/data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --web.enable-remote-write-receiver \
    --web.enable-admin-api \
    --web.enable-lifecycle \
    --log.level=warn
}
