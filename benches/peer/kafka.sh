#!/usr/bin/env bash
# Apache Kafka itself, the same-run peer: one KRaft node in combined mode (broker and
# controller), its shipped defaults but for the listeners and log dir, with a stated
# heap. Jars come from Maven Central through tests/java (mvn package writes the
# classpath). Used by the peer benchmarks and by the tests that compare answers.
#
#   benches/peer/kafka.sh start DIR PORT [HEAP]   # formats DIR on first use; waits until it serves
#   benches/peer/kafka.sh stop DIR
#   benches/peer/kafka.sh classpath              # prints the classpath (builds it if needed)
#   benches/peer/kafka.sh tool CLASS ARGS...       # runs a Kafka tool's main class
#   benches/peer/kafka.sh connect-classpath        # Kafka Connect 4.3.1 with the FileStream connectors
#
# A member of a static three-node cluster: KAFKA_NODE_ID=N KAFKA_VOTERS=1@127.0.0.1:P,...
# KAFKA_CLUSTER_ID=ID (the same for all; the controller port is PORT+1, as for one node);
# internal topics then get three replicas. Start the members together: each waits for
# the quorum.
#
# KAFKA_EXTRA_LISTENERS (e.g. SSL://localhost:9094) adds listeners, advertised as written
# and bound on 127.0.0.1; KAFKA_EXTRA_PROPS names a file of properties appended to
# server.properties (the TLS keystore, SASL users): the security benchmark uses both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
JAVA_DIR="$ROOT/tests/java"
CP_FILE="$JAVA_DIR/target/classpath.txt"

classpath() {
  if [ ! -s "$CP_FILE" ] || [ ! -s "$JAVA_DIR/target/ringmq-java-tests-0.1.0.jar" ]; then
    (cd "$JAVA_DIR" && mvn -q -B package -DskipTests) >&2
  fi
  printf '%s:%s' "$JAVA_DIR/target/ringmq-java-tests-0.1.0.jar" "$(cat "$CP_FILE")"
}

log4j_config() {
  local f="$1/log4j2.yaml"
  cat > "$f" <<'YAML'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
YAML
  printf '%s' "$f"
}

case "${1:-}" in
  classpath) classpath ;;
  connect-classpath)
    if [ ! -s "$JAVA_DIR/connect/target/classpath.txt" ]; then
      (cd "$JAVA_DIR/connect" && mvn -q -B package) >&2
    fi
    cat "$JAVA_DIR/connect/target/classpath.txt"
    ;;
  tool)
    shift
    cls="$1"; shift
    exec java -Xmx512m -cp "$(classpath)" -Dlog4j2.configurationFile="$(log4j_config "${TMPDIR:-/tmp}")" "$cls" "$@"
    ;;
  start)
    dir="$2"; port="$3"; heap="${4:-1G}"
    mkdir -p "$dir"
    cport=$((port + 1))
    extra="${KAFKA_EXTRA_LISTENERS:-}"
    bind_extra=$(printf '%s' "$extra" | sed 's#://[^:,]*:#://127.0.0.1:#g')
    node="${KAFKA_NODE_ID:-1}"
    if [ -n "${KAFKA_VOTERS:-}" ]; then
      quorum="controller.quorum.voters=$KAFKA_VOTERS"; rf=3; isr=2
    else
      quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport"; rf=1; isr=1
    fi
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node
$quorum
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport${bind_extra:+,$bind_extra}
advertised.listeners=PLAINTEXT://127.0.0.1:$port${extra:+,$extra}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
log.dirs=$dir/logs
num.partitions=1
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
PROPS
    if [ -n "${KAFKA_EXTRA_PROPS:-}" ]; then cat "$KAFKA_EXTRA_PROPS" >> "$dir/server.properties"; fi
    cp_=$(classpath)
    log4j=$(log4j_config "$dir")
    if [ ! -f "$dir/logs/meta.properties" ]; then
      if [ -n "${KAFKA_VOTERS:-}" ]; then
        java -Xmx256m -cp "$cp_" -Dlog4j2.configurationFile="$log4j" kafka.tools.StorageTool \
          format -t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" >"$dir/format.log" 2>&1
      else
        java -Xmx256m -cp "$cp_" -Dlog4j2.configurationFile="$log4j" kafka.tools.StorageTool \
          format --standalone -t "$(java -cp "$cp_" -Dlog4j2.configurationFile="$log4j" kafka.tools.StorageTool random-uuid)" \
          -c "$dir/server.properties" >"$dir/format.log" 2>&1
      fi
    fi
    nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$log4j" \
      -cp "$cp_" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
    echo $! > "$dir/kafka.pid"
    for _ in $(seq 1 600); do
      if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
        # The port opens before the broker is unfenced; wait for metadata to answer.
        sleep 1
        echo "kafka pid $(cat "$dir/kafka.pid") on 127.0.0.1:$port"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
        echo "kafka exited:" >&2; tail -20 "$dir/kafka.log" >&2; exit 1
      fi
      sleep 0.1
    done
    echo "kafka did not start listening" >&2; exit 1
    ;;
  stop)
    dir="$2"
    if [ -f "$dir/kafka.pid" ]; then
      pid=$(cat "$dir/kafka.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/kafka.pid"
    fi
    ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
