# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# PostgreSQL: a private cluster (initdb once) in $SVC_DIR/data. postgres refuses to run as root, so as root it
# runs as the postgres uid inside a user namespace (see unprivileged_prefix in lib.sh). Durability is traded for
# speed (fsync off): this is a throwaway test instance.
svc_packages() { pg_bin >/dev/null || echo postgresql; }

# The newest installed server's bin dir (Debian installs them side by side as /usr/lib/postgresql/<major>).
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -x $dir/postgres ]] && echo "$dir"
}

svc_start() {
  local bin
  bin=$(pg_bin)
  unprivileged_prefix postgres
  if [[ ! -s $SVC_DIR/data/PG_VERSION ]]; then
    rm -rf "$SVC_DIR/data"
    "${UNPRIV[@]}" "$bin/initdb" -D "$SVC_DIR/data" -U postgres --no-locale -E UTF8 \
      --auth-local=trust --auth-host=scram-sha-256 --no-sync >>"$SVC_DIR/daemon.log" 2>&1 ||
      { warn "postgres: initdb failed"; return 1; }
  fi
  # svc_start only runs when our postgres is not running and nobody holds the port: a postmaster.pid left by
  # a killed instance is stale, and postgres would refuse to start if its pid now belongs to another process.
  rm -f "$SVC_DIR/data/postmaster.pid"
  spawn "${UNPRIV[@]}" "$bin/postgres" -D "$SVC_DIR/data" \
    -c listen_addresses=127.0.0.1 -c port="$POSTGRES_PORT" -c unix_socket_directories="$SVC_DIR" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 -c shared_buffers=64MB -c logging_collector=off
}

svc_setup() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$SVC_DIR" -p "$POSTGRES_PORT" -U postgres -d postgres >>"$SVC_DIR/daemon.log" 2>&1 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'capstan') THEN
    CREATE ROLE capstan LOGIN CREATEDB PASSWORD 'capstan';
  ELSE
    ALTER ROLE capstan LOGIN CREATEDB PASSWORD 'capstan';
  END IF;
END $$;
SELECT 'CREATE DATABASE capstan OWNER capstan'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'capstan') \gexec
SQL
}

# SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for every client to disconnect.
svc_stop() { stop_daemon INT; }
