# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# NATS with JetStream (Debian's nats-server), monitoring endpoint on its own port.
svc_packages() { command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || echo nats-server; }

svc_start() {
  render "$SERVICES_D/nats.conf.in" "$SVC_DIR/nats.conf" \
    PORT="$NATS_PORT" MONITOR_PORT="$NATS_MONITOR_PORT" DIR="$SVC_DIR"
  mkdir -p "$SVC_DIR/jetstream"
  spawn "$(command -v nats-server || echo /usr/sbin/nats-server)" -c "$SVC_DIR/nats.conf"
}
