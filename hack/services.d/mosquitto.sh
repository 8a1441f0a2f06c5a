# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# Mosquitto (MQTT 3.1.1/5), anonymous on loopback.
svc_packages() { command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || echo mosquitto; }

svc_start() {
  render "$SERVICES_D/mosquitto.conf.in" "$SVC_DIR/mosquitto.conf" \
    PORT="$MOSQUITTO_PORT" USER="$(id -un)"
  spawn "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$SVC_DIR/mosquitto.conf"
}
