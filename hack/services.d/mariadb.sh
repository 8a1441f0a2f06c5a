# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# MariaDB: a private data dir (mariadb-install-db once), run as the current user (root is allowed with
# `user = root`). root@localhost has no password and is reachable only over the private unix socket.
svc_packages() { command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || echo mariadb-server; }

svc_start() {
  render "$SERVICES_D/mariadb.cnf.in" "$SVC_DIR/my.cnf" PORT="$MARIADB_PORT" DIR="$SVC_DIR" USER="$(id -un)"
  if [[ ! -d $SVC_DIR/data/mysql ]]; then
    rm -rf "$SVC_DIR/data"
    mariadb-install-db --defaults-file="$SVC_DIR/my.cnf" --auth-root-authentication-method=normal \
      --skip-test-db >>"$SVC_DIR/daemon.log" 2>&1 || { warn "mariadb: mariadb-install-db failed"; return 1; }
  fi
  spawn "$(command -v mariadbd || echo /usr/sbin/mariadbd)" --defaults-file="$SVC_DIR/my.cnf"
}

svc_setup() {
  mariadb --no-defaults -S "$SVC_DIR/mariadb.sock" -u root >>"$SVC_DIR/daemon.log" 2>&1 <<'SQL'
CREATE USER IF NOT EXISTS 'capstan'@'127.0.0.1' IDENTIFIED BY 'capstan';
CREATE USER IF NOT EXISTS 'capstan'@'localhost' IDENTIFIED BY 'capstan';
ALTER USER 'capstan'@'127.0.0.1' IDENTIFIED BY 'capstan';
ALTER USER 'capstan'@'localhost' IDENTIFIED BY 'capstan';
CREATE DATABASE IF NOT EXISTS capstan;
GRANT ALL PRIVILEGES ON *.* TO 'capstan'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'capstan'@'localhost';
SQL
}
