# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# Kafka: a single KRaft node (broker + controller) from Maven Central jars on the installed JDK 17.
# The classpath is hack/kafka/pom.xml's runtime dependencies, copied once into a cache dir named after the
# Kafka version and a hash of the POM, so editing the POM gives a fresh classpath.
KAFKA_POM=$REPO_ROOT/hack/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' "$KAFKA_POM")
KAFKA_LIB=$CACHE_DIR/kafka/$KAFKA_VERSION-$(sha256sum "$KAFKA_POM" | cut -c1-12)/lib
# Pinned: Maven 3.8's built-in default for the dependency plugin is old.
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

svc_packages() {
  command -v java >/dev/null || echo openjdk-17-jre-headless
  command -v mvn >/dev/null || echo maven
}

svc_fetch() {
  [[ -f $KAFKA_LIB/.complete ]] && return 0
  local tmp
  mkdir -p "$CACHE_DIR/kafka"
  tmp=$(mktemp -d "$CACHE_DIR/kafka/.fetch.XXXXXX")
  if ! mvn -B -q -f "$KAFKA_POM" "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >"$tmp/mvn.log" 2>&1; then
    warn "kafka: mvn dependency:copy-dependencies of $KAFKA_POM failed:"
    tail -n 30 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    return 1
  fi
  touch "$tmp/lib/.complete"
  rm -rf "$KAFKA_LIB"
  mkdir -p "$(dirname "$KAFKA_LIB")"
  mv "$tmp/lib" "$KAFKA_LIB"
  rm -rf "$tmp"
}

KAFKA_JAVA=(java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=file:$REPO_ROOT/hack/kafka/log4j2.properties" -cp "$KAFKA_LIB/*")

svc_start() {
  render "$REPO_ROOT/hack/kafka/server.properties.in" "$SVC_DIR/server.properties" \
    PORT="$KAFKA_PORT" CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" DATA_DIR="$SVC_DIR"
  if [[ ! -f $SVC_DIR/data/meta.properties ]]; then
    rm -rf "$SVC_DIR/data"
    local cluster_id
    cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())')
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$SVC_DIR/server.properties" \
      >>"$SVC_DIR/daemon.log" 2>&1 || { warn "kafka: formatting the KRaft log dir failed"; return 1; }
  fi
  spawn "${KAFKA_JAVA[@]}" kafka.Kafka "$SVC_DIR/server.properties"
}
SVC_TIMEOUT=180
