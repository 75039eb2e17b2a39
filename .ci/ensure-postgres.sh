#!/usr/bin/env bash
# Makes sure the PostgreSQL named by CONSENTRY_PG_URL answers. If it does not, starts a
# throwaway server from the machine's PostgreSQL binaries when they are installed; otherwise
# says loudly that the PostgreSQL suite cannot run (and CI fails: it must never skip it).
set -u
url=${CONSENTRY_PG_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
hostport=${url#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}
if (exec 3<>/dev/tcp/$host/$port) 2>/dev/null; then echo ">> postgres: $host:$port answers"; exit 0; fi
echo ">> postgres: nothing answers on $host:$port"
if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
  echo ">> postgres: starting the machine's cluster"
  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start && sleep 2
  if (exec 3<>/dev/tcp/$host/$port) 2>/dev/null; then exit 0; fi
fi
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1)
if [ -n "$initdb" ]; then
  dir=$(mktemp -d /tmp/consentry-pg.XXXXXX); bindir=$(dirname "$initdb")
  echo ">> postgres: starting a throwaway server in $dir on port $port"
  chown -R postgres "$dir" 2>/dev/null || true
  runas() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
  runas "$initdb -D $dir/data -U postgres -A trust >/dev/null" && \
  runas "$bindir/pg_ctl -D $dir/data -o '-p $port -k $dir' -l $dir/log start >/dev/null" && sleep 2 && \
  runas "$bindir/createdb -h 127.0.0.1 -p $port -U postgres test" || true
  if (exec 3<>/dev/tcp/$host/$port) 2>/dev/null; then exit 0; fi
fi
echo "!! ================================================================"
echo "!! PostgreSQL is not reachable at $host:$port and could not be started."
echo "!! The PostgreSQL store suite WILL FAIL (it is never skipped)."
echo "!! Set CONSENTRY_PG_URL or install PostgreSQL server binaries."
echo "!! ================================================================"
exit 0
