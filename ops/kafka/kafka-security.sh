#!/usr/bin/env bash
# Entry point of the compose `kafka` service: starts the broker with the image's own
# start script, then (re)creates the SCRAM users of the Loopline roles and applies
# acls.conf through the ADMIN listener, which is bound to 127.0.0.1 inside this
# container only. Safe to repeat: credentials are upserted, ACLs are added idempotently.
# When done it writes /tmp/loopline-security-ready (the healthcheck waits for it).
set -euo pipefail

/etc/kafka/docker/run &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null; wait "$broker"; exit $?' TERM INT

bin=/opt/kafka/bin
admin=127.0.0.1:9094
rm -f /tmp/loopline-security-ready
until "$bin/kafka-broker-api-versions.sh" --bootstrap-server "$admin" > /dev/null 2>&1; do
    kill -0 "$broker" 2>/dev/null || { echo "kafka-security: the broker exited" >&2; wait "$broker"; exit 1; }
    sleep 2
done

# user=password pairs from the environment (never echoed)
for pair in "loopline-producer=${SCRAM_PRODUCER_PASSWORD:?}" "loopline-reviewer=${SCRAM_REVIEWER_PASSWORD:?}" \
            "loopline-worker=${SCRAM_WORKER_PASSWORD:?}" "schema-registry=${SCRAM_REGISTRY_PASSWORD:?}"; do
    user=${pair%%=*}
    password=${pair#*=}
    "$bin/kafka-configs.sh" --bootstrap-server "$admin" --alter --entity-type users --entity-name "$user" \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=${password}]" > /dev/null
    echo "kafka-security: SCRAM-SHA-512 credentials of $user set"
done

grep -v '^[[:space:]]*#' /opt/loopline/kafka/acls.conf | while read -r principal rtype pattern name ops; do
    [ -n "${principal:-}" ] || continue
    args=(--bootstrap-server "$admin" --add --force --allow-principal "User:$principal"
          --resource-pattern-type "$pattern")
    case "$rtype" in
        topic) args+=(--topic "$name") ;;
        group) args+=(--group "$name") ;;
        cluster) args+=(--cluster) ;;
        *) echo "kafka-security: unknown resource type $rtype" >&2; exit 1 ;;
    esac
    for op in ${ops//,/ }; do args+=(--operation "$op"); done
    "$bin/kafka-acls.sh" "${args[@]}" > /dev/null
    echo "kafka-security: $principal may $ops on $rtype $name ($pattern)"
done

touch /tmp/loopline-security-ready
wait "$broker"
