# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# RabbitMQ with the management plugin, run as the current user with a private node name, Erlang cookie
# (HOME), epmd port and distribution port, so it never meets a system RabbitMQ or its epmd.
svc_packages() { [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || echo rabbitmq-server; }

rabbit_env() {
  export HOME=$SVC_DIR \
    RABBITMQ_NODENAME=capstan@localhost \
    RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_CONFIG_FILE=$SVC_DIR/rabbitmq.conf \
    RABBITMQ_ADVANCED_CONFIG_FILE=$SVC_DIR/advanced.config \
    RABBITMQ_ENABLED_PLUGINS_FILE=$SVC_DIR/enabled_plugins \
    RABBITMQ_MNESIA_BASE=$SVC_DIR/mnesia \
    RABBITMQ_LOG_BASE=$SVC_DIR/log \
    RABBITMQ_PID_FILE=$SVC_DIR/rabbitmq.pid \
    RABBITMQ_DIST_PORT=$RABBITMQ_DIST_PORT \
    ERL_EPMD_PORT=$RABBITMQ_EPMD_PORT \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

svc_start() {
  render "$SERVICES_D/rabbitmq.conf.in" "$SVC_DIR/rabbitmq.conf" \
    PORT="$RABBITMQ_PORT" MANAGEMENT_PORT="$RABBITMQ_MANAGEMENT_PORT"
  echo '[rabbitmq_management].' >"$SVC_DIR/enabled_plugins"
  mkdir -p "$SVC_DIR/mnesia" "$SVC_DIR/log"
  (rabbit_env && cd "$SVC_DIR" && spawn /usr/lib/rabbitmq/bin/rabbitmq-server)
}

# The default_user settings only act on a fresh node; recreate the user if an old data dir lacks it.
svc_setup() {
  probe rabbitmq ready 2>/dev/null && return 0
  (
    rabbit_env
    local ctl=/usr/lib/rabbitmq/bin/rabbitmqctl
    "$ctl" -q add_user capstan capstan 2>/dev/null || "$ctl" -q change_password capstan capstan
    "$ctl" -q set_user_tags capstan administrator management
    "$ctl" -q set_permissions -p / capstan '.*' '.*' '.*'
  ) >>"$SVC_DIR/daemon.log" 2>&1
}

svc_stop() {
  stop_daemon TERM
  # erl started a private epmd (its own session, so not in our process group); it is ours by its port.
  local epmd
  epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n 1)
  [[ -n $epmd ]] && ERL_EPMD_PORT=$RABBITMQ_EPMD_PORT "$epmd" -kill >/dev/null 2>&1 || true
}
SVC_TIMEOUT=180
