# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# Redis: a memory-only instance, run as the current user.
svc_packages() { command -v redis-server >/dev/null || echo redis-server; }

svc_start() {
  render "$SERVICES_D/redis.conf.in" "$SVC_DIR/redis.conf" PORT="$REDIS_PORT" DIR="$SVC_DIR"
  spawn redis-server "$SVC_DIR/redis.conf"
}
