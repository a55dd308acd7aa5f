#!/usr/bin/env bash
# Make sure the local services the test-suite talks to are up.
# Starts Redis, PostgreSQL and NATS when installed but stopped; says how to
# install them when missing. Exits non-zero if one is still unreachable, unless
# that service is opted out (OPENHEIM_TEST_NO_REDIS=1, ..._NO_POSTGRES, ..._NO_NATS).
set -uo pipefail

up() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_up() { # name port
  for _ in $(seq 1 50); do up 127.0.0.1 "$2" && return 0; sleep 0.2; done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

start_redis() {
  command -v redis-server >/dev/null || { echo "  redis-server is not installed: apt-get install redis-server (Debian/Ubuntu) or brew install redis"; return 1; }
  mkdir -p /tmp/openheim-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/openheim-redis --logfile /tmp/openheim-redis/redis.log >/dev/null
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  elif command -v pg_ctl >/dev/null && [ -n "${PGDATA:-}" ]; then
    pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" start
  else
    echo "  PostgreSQL is not installed: apt-get install postgresql (Debian/Ubuntu) or brew install postgresql;"
    echo "  the tests connect to 127.0.0.1:5432 as the current user with trust auth, database 'test'"
    return 1
  fi
}

start_nats() {
  local bin; bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  [ -x "$bin" ] || { echo "  nats-server is not installed: apt-get install nats-server (Debian/Ubuntu) or brew install nats-server"; return 1; }
  mkdir -p /tmp/openheim-nats
  if command -v start-stop-daemon >/dev/null; then
    start-stop-daemon --start --oknodo --background --exec "$bin" -- -a 127.0.0.1 -p 4222 -js -sd /tmp/openheim-nats -l /tmp/openheim-nats/nats.log
  else
    nohup "$bin" -a 127.0.0.1 -p 4222 -js -sd /tmp/openheim-nats >/tmp/openheim-nats/nats.log 2>&1 &
  fi
}

status=0
check() { # name port optout starter
  local name=$1 port=$2 optout=$3 starter=$4
  if [ "${!optout:-0}" = 1 ]; then echo "services: $name opted out ($optout=1)"; return; fi
  if up 127.0.0.1 "$port"; then echo "services: $name up on 127.0.0.1:$port"; return; fi
  echo "services: $name is not answering on 127.0.0.1:$port; starting it"
  $starter && wait_up "$name" "$port" && { echo "services: $name started"; return; }
  echo "services: $name is still unreachable on 127.0.0.1:$port; its tests will fail (set $optout=1 to skip them)"
  status=1
}

check redis 6379 OPENHEIM_TEST_NO_REDIS start_redis
check postgres 5432 OPENHEIM_TEST_NO_POSTGRES start_postgres
check nats 4222 OPENHEIM_TEST_NO_NATS start_nats
exit $status
