#!/usr/bin/env bash
# shellcheck shell=bash
# Shared by scripts/stack, scripts/test and .ci/run: the configuration (env vars with loopback
# defaults), logging, process helpers, and bringing up PostgreSQL, Redis and NATS (JetStream)
# locally when they are not running. Sourced, never executed; sourcing it starts nothing.
#
# Servers the scripts start are recorded in $FLASH_DATA_DIR/pids/ so that `scripts/stack down`
# stops exactly those. A server that already answers is used as it is and never stopped.

set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Logging

if [[ -t 2 && -z ${NO_COLOR:-} && ${TERM:-dumb} != dumb ]]; then
  _c_bold=$'\e[1m' _c_red=$'\e[31m' _c_yellow=$'\e[33m' _c_reset=$'\e[0m'
else
  _c_bold='' _c_red='' _c_yellow='' _c_reset=''
fi

log() { printf '%s\n' "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$_c_yellow" "$_c_reset" "$*" >&2; }
die() {
  printf '%serror:%s %s\n' "$_c_red" "$_c_reset" "$*" >&2
  exit 1
}
header() { printf '\n%s==> %s%s\n' "$_c_bold" "$*" "$_c_reset" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# is_true VALUE: 1/true/yes/on (any case) count as true.
is_true() {
  case ${1,,} in
    1 | true | yes | on) return 0 ;;
    *) return 1 ;;
  esac
}

# abs_path PATH: PATH made absolute against the caller's working directory.
abs_path() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Configuration. Every value can be overridden from the environment.

FLASH_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

DATABASE_URL="${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/flash}"
REDIS_URL="${REDIS_URL:=redis://127.0.0.1:6379}"
NATS_URL="${NATS_URL:=nats://127.0.0.1:4222}"

ADMISSION_ADDR="${ADMISSION_ADDR:=127.0.0.1:8080}"
CATALOG_ADDR="${CATALOG_ADDR:=127.0.0.1:8081}"
MEMBER_ADDR="${MEMBER_ADDR:=127.0.0.1:8082}"
WORKERS_ADDR="${WORKERS_ADDR:=127.0.0.1:8083}"
# The door's ops address (its OPS_ADDR): /readyz and /metrics, kept off the shop origin.
ADMISSION_OPS_ADDR="${ADMISSION_OPS_ADDR:=127.0.0.1:9080}"

FLASH_DATA_DIR="$(abs_path "${FLASH_DATA_DIR:-$FLASH_ROOT/.data}")"
FLASH_PIDS="$FLASH_DATA_DIR/pids"
FLASH_LOGS="$FLASH_DATA_DIR/logs"

JWT_PRIVATE_KEY="$(abs_path "${JWT_PRIVATE_KEY:-$FLASH_DATA_DIR/keys/jwt_private.pem}")"
JWT_PUBLIC_KEY="$(abs_path "${JWT_PUBLIC_KEY:-$FLASH_DATA_DIR/keys/jwt_public.pem}")"

ADMIN_EMAIL="${ADMIN_EMAIL:=admin@flash.local}"
# The workers write each email as an .eml file here (no SMTP server needed in development).
MAIL_DIR="$(abs_path "${MAIL_DIR:-$FLASH_DATA_DIR/mail}")"

# SKIP_SERVERS=1: PostgreSQL, Redis and NATS are provided; never install or start them.
SKIP_SERVERS="${SKIP_SERVERS:=0}"
# How long to wait for a server (PostgreSQL, Redis, NATS) and for a service's /readyz.
FLASH_SERVER_WAIT_SECS="${FLASH_SERVER_WAIT_SECS:=30}"
FLASH_SERVICE_WAIT_SECS="${FLASH_SERVICE_WAIT_SECS:=60}"

# Cargo resolves a relative CARGO_TARGET_DIR against its working directory; the scripts run
# cargo from the repo root, so pin it down once here and agree with cargo on where binaries are.
if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
  CARGO_TARGET_DIR="$(abs_path "$CARGO_TARGET_DIR")"
  export CARGO_TARGET_DIR
fi
# shellcheck disable=SC2034 # used by scripts/stack
FLASH_TARGET_DIR="${CARGO_TARGET_DIR:-$FLASH_ROOT/target}"

export DATABASE_URL REDIS_URL NATS_URL
export ADMISSION_ADDR CATALOG_ADDR MEMBER_ADDR WORKERS_ADDR ADMISSION_OPS_ADDR
export FLASH_DATA_DIR JWT_PRIVATE_KEY JWT_PUBLIC_KEY ADMIN_EMAIL MAIL_DIR

ensure_dirs() {
  mkdir -p "$FLASH_DATA_DIR" "$FLASH_PIDS" "$FLASH_LOGS"
}

# ensure_admin_password: ADMIN_PASSWORD from the environment, else the one stored in
# $FLASH_DATA_DIR/admin_password, else a new random one stored there (mode 600).
ensure_admin_password() {
  local file="$FLASH_DATA_DIR/admin_password"
  if [[ -z ${ADMIN_PASSWORD:-} ]]; then
    ensure_dirs
    if [[ -s $file ]]; then
      ADMIN_PASSWORD="$(<"$file")"
    else
      if have openssl; then
        ADMIN_PASSWORD="$(openssl rand -base64 18)"
      else
        ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64)"
      fi
      (umask 077 && printf '%s\n' "$ADMIN_PASSWORD" >"$file")
      chmod 600 "$file"
      log "generated the admin password, stored in $file"
    fi
  fi
  export ADMIN_PASSWORD
}

# ---------------------------------------------------------------------------------------------
# URLs

# url_parse URL DEFAULT_PORT: sets URL_SCHEME URL_AUTHORITY URL_USER URL_PASS URL_HOST URL_PORT
# URL_PATH (without the leading slash) and URL_QUERY. Handles user:pass@, [v6]:port, ?query.
url_parse() {
  local url=$1 rest userinfo='' hostport
  [[ $url == *://* ]] || die "not a URL: '$url'"
  URL_SCHEME=${url%%://*}
  rest=${url#*://}
  URL_AUTHORITY=${rest%%[/?#]*}
  rest=${rest:${#URL_AUTHORITY}}
  URL_PATH=${rest%%[?#]*}
  URL_PATH=${URL_PATH#/}
  URL_QUERY=''
  if [[ $rest == *\?* ]]; then
    URL_QUERY=${rest#*\?}
    URL_QUERY=${URL_QUERY%%#*}
  fi
  hostport=$URL_AUTHORITY
  if [[ $URL_AUTHORITY == *@* ]]; then
    userinfo=${URL_AUTHORITY%@*}
    hostport=${URL_AUTHORITY##*@}
  fi
  URL_USER=${userinfo%%:*}
  URL_PASS=''
  if [[ $userinfo == *:* ]]; then URL_PASS=${userinfo#*:}; fi
  URL_PORT=''
  if [[ $hostport == \[* ]]; then
    URL_HOST=${hostport#\[}
    URL_HOST=${URL_HOST%%]*}
    URL_PORT=${hostport#*]}
    URL_PORT=${URL_PORT#:}
  else
    URL_HOST=${hostport%%:*}
    if [[ $hostport == *:* ]]; then URL_PORT=${hostport##*:}; fi
  fi
  URL_HOST=${URL_HOST:-localhost}
  URL_PORT=${URL_PORT:-$2}
  [[ $URL_PORT =~ ^[0-9]+$ ]] || die "bad port in '$(redact_url "$url")'"
}

# redact_url URL: the URL with its password replaced by ***, for messages.
redact_url() {
  local url=$1 scheme rest authority userinfo
  [[ $url == *://*@* ]] || {
    printf '%s\n' "$url"
    return 0
  }
  scheme=${url%%://*}
  rest=${url#*://}
  authority=${rest%%[/?#]*}
  if [[ $authority != *@* ]]; then
    printf '%s\n' "$url"
    return 0
  fi
  userinfo=${authority%@*}
  if [[ $userinfo == *:* ]]; then userinfo="${userinfo%%:*}:***"; fi
  printf '%s://%s@%s%s\n' "$scheme" "$userinfo" "${authority##*@}" "${rest:${#authority}}"
}

is_loopback() {
  case $1 in
    localhost | 127.* | ::1 | 0:0:0:0:0:0:0:1) return 0 ;;
    *) return 1 ;;
  esac
}

# The address a local server should bind for a loopback URL host.
bind_addr() {
  case $1 in
    ::1 | 0:0:0:0:0:0:0:1) printf '::1\n' ;;
    localhost) printf '127.0.0.1\n' ;;
    *) printf '%s\n' "$1" ;;
  esac
}

# resolve_servers: host, port and credentials of the three servers from their URLs.
resolve_servers() {
  url_parse "$DATABASE_URL" 5432
  PG_HOST=$URL_HOST PG_PORT=$URL_PORT
  PG_DB=${URL_PATH:-${URL_USER:-postgres}}
  # The maintenance database on the same server, with the same credentials and options.
  PG_ADMIN_URL="$URL_SCHEME://$URL_AUTHORITY/postgres${URL_QUERY:+?$URL_QUERY}"

  url_parse "$REDIS_URL" 6379
  REDIS_HOST=$URL_HOST REDIS_PORT=$URL_PORT REDIS_PASS=$URL_PASS

  url_parse "$NATS_URL" 4222
  NATS_HOST=$URL_HOST NATS_PORT=$URL_PORT
}

# ---------------------------------------------------------------------------------------------
# Processes

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() {
  # shellcheck disable=SC2016 # $0 and $1 expand in the inner bash
  timeout 3 bash -c ': <>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# pid_alive PID: the process exists and is not a zombie (Linux /proc; procps may be absent).
pid_alive() {
  local stat state
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  state=${stat##*) }
  [[ ${state%% *} != Z ]]
}

# running_pid PIDFILE COMM: prints the pid recorded in PIDFILE when that process is alive and
# is still the program COMM (so a recycled pid is never mistaken for ours).
running_pid() {
  local pidfile=$1 comm=$2 pid
  [[ -s $pidfile ]] || return 1
  pid="$(<"$pidfile")"
  pid_alive "$pid" || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "${comm:0:15}" ]] || return 1
  printf '%s\n' "$pid"
}

# spawn_detached PIDFILE LOGFILE CMD...: runs CMD in the background in its own session (so a
# Ctrl-C in the terminal does not reach it), stdin from /dev/null, output appended to LOGFILE,
# and its pid written to PIDFILE.
spawn_detached() {
  local pidfile=$1 logfile=$2 i
  shift 2
  rm -f "$pidfile"
  printf '=== %s start: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$logfile"
  # The child writes its own pid and then execs CMD, so the pid is CMD's even when setsid forks.
  # shellcheck disable=SC2016 # $$, $0 and $@ expand in the inner bash
  if have setsid; then
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  else
    nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  fi
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "could not start $1 (no pid after 5 s); see $logfile"
}

# stop_pid NAME PID [SECS]: SIGTERM, wait up to SECS (15), then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 secs=${3:-15} start=$SECONDS
  kill -TERM "$pid" 2>/dev/null || return 0
  while pid_alive "$pid"; do
    if ((SECONDS - start >= secs)); then
      warn "$name (pid $pid) did not stop within ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
}

# tail_log FILE: the end of a log, for failure messages.
tail_log() {
  if [[ -r $1 ]]; then
    log "--- last lines of $1 ---"
    tail -n "${2:-40}" "$1" >&2 || true
    log "---"
  fi
}

# ---------------------------------------------------------------------------------------------
# Installing

# as_root CMD...: runs CMD as root (sudo when not root; non-interactive sudo without a tty).
as_root() {
  if ((EUID == 0)); then
    "$@"
  elif have sudo; then
    if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
  else
    die "need root for: $* (run as root or install sudo)"
  fi
}

# apt_install PACKAGE...: Debian packages, with apt-get update and a retry when the first try fails.
apt_install() {
  have apt-get || die "$* missing and there is no apt-get here: install $* with your OS package manager"
  log "installing $* from the Debian packages (apt-get)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
    log "apt-get install failed; running apt-get update and trying again"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
      die "could not install $* with apt-get"
  fi
}

# ensure_cc: the C compiler and linker that cargo needs (rustup installs none; ring and mimalloc
# compile C), from the Debian packages when missing.
ensure_cc() {
  have cc || apt_install gcc libc6-dev
}

# find_bin NAME: path of NAME, also looking in the sbin directories a non-root PATH may lack.
find_bin() {
  local d
  if command -v "$1" 2>/dev/null; then return 0; fi
  for d in /usr/sbin /sbin /usr/local/sbin /usr/local/bin; do
    if [[ -x $d/$1 ]]; then
      printf '%s\n' "$d/$1"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Health checks (each quiet, true when the server answers)

pg_answers() {
  if have pg_isready; then
    pg_isready -q -t 2 -d "$DATABASE_URL"
  else
    tcp_open "$PG_HOST" "$PG_PORT"
  fi
}

redis_answers() {
  if have redis-cli; then
    [[ "$(timeout 3 redis-cli --no-auth-warning -u "$REDIS_URL" ping 2>/dev/null)" == PONG ]]
  else
    tcp_open "$REDIS_HOST" "$REDIS_PORT"
  fi
}

# nats_info: the INFO line a NATS server sends on connect.
nats_info() {
  # shellcheck disable=SC2016 # $0 and $1 expand in the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && IFS= read -r -t 2 line <&3 && printf "%s\n" "$line"' \
    "$NATS_HOST" "$NATS_PORT" 2>/dev/null
}

nats_answers() {
  local info
  info="$(nats_info)" || return 1
  [[ $info == INFO* ]]
}

# wait_until NAME CHECK: runs CHECK every second until it succeeds or FLASH_SERVER_WAIT_SECS pass.
wait_until() {
  local name=$1 check=$2 start=$SECONDS
  until "$check"; do
    if ((SECONDS - start >= FLASH_SERVER_WAIT_SECS)); then return 1; fi
    log "$name is still unavailable - sleeping"
    sleep 1
  done
}

# wait_provided NAME URL CHECK WHY: a server we may not start; wait for it, then fail loudly.
wait_provided() {
  local name=$1 url=$2 check=$3 why=$4
  if "$check"; then return 0; fi
  log "$name at $(redact_url "$url") does not answer; $why, so waiting for it"
  wait_until "$name" "$check" ||
    die "$name at $(redact_url "$url") is unreachable after ${FLASH_SERVER_WAIT_SECS}s ($why; start it yourself or fix the URL)"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL (Debian's postgresql-common cluster tools)

pg_server_installed() {
  have pg_createcluster && have pg_ctlcluster && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

pg_latest_version() {
  local d
  for d in /usr/lib/postgresql/*/bin/postgres; do
    d=${d#/usr/lib/postgresql/}
    printf '%s\n' "${d%%/*}"
  done | sort -V | tail -n 1
}

# pg_cluster_on_port PORT: "VERSION NAME" of the cluster configured on PORT, if any.
pg_cluster_on_port() {
  pg_lsclusters -h 2>/dev/null | awk -v port="$1" '$3 == port { print $1, $2; exit }'
}

pg_cluster_exists() {
  [[ -n "$(pg_lsclusters -h 2>/dev/null | awk -v v="$1" -v n="$2" '$1 == v && $2 == n')" ]]
}

pg_cluster_online() {
  [[ -n "$(pg_lsclusters -h 2>/dev/null | awk -v v="$1" -v n="$2" '$1 == v && $2 == n && $4 == "online"')" ]]
}

# pg_trust_loopback VERSION NAME: DEV ONLY. On clusters these scripts create (or install), TCP
# connections from 127.0.0.1 and ::1 are trusted without a password, so that the default
# DATABASE_URL (postgres@127.0.0.1, no password) works. Never do this on a shared machine.
pg_trust_loopback() {
  local hba="/etc/postgresql/$1/$2/pg_hba.conf"
  as_root test -f "$hba" || die "no $hba for cluster $1/$2"
  as_root sed -E -i \
    's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' \
    "$hba"
  if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | as_root tee -a "$hba" >/dev/null
  fi
  log "PostgreSQL $1/$2: loopback TCP connections trusted (dev only; $hba)"
  if pg_cluster_online "$1" "$2"; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload
  fi
}

pg_start_local() {
  local installed_now=0 found ver name
  if ! pg_server_installed; then
    apt_install postgresql
    installed_now=1
  fi
  pg_server_installed || die "PostgreSQL is still not installed after apt-get install postgresql"

  found="$(pg_cluster_on_port "$PG_PORT")"
  if [[ -n $found ]]; then
    read -r ver name <<<"$found"
    # A cluster the package install just created gets the same dev set-up as one we create.
    if ((installed_now)); then pg_trust_loopback "$ver" "$name"; fi
    if ! pg_cluster_online "$ver" "$name"; then
      log "starting PostgreSQL cluster $ver/$name on port $PG_PORT"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
        die "pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
    fi
  else
    ver="$(pg_latest_version)"
    name=main
    if pg_cluster_exists "$ver" main; then name="flash_$PG_PORT"; fi
    log "creating PostgreSQL cluster $ver/$name on port $PG_PORT"
    as_root pg_createcluster "$ver" "$name" -p "$PG_PORT" >&2 ||
      die "pg_createcluster $ver $name -p $PG_PORT failed"
    pg_trust_loopback "$ver" "$name"
    log "starting PostgreSQL cluster $ver/$name on port $PG_PORT"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
      die "pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
  fi
  printf '%s %s %s\n' "$ver" "$name" "$PG_PORT" >"$FLASH_PIDS/postgres.cluster"
}

ensure_postgres() {
  if ! have psql || ! have pg_isready; then
    if is_true "$SKIP_SERVERS"; then
      warn "psql/pg_isready missing; checking PostgreSQL by TCP only"
    elif is_loopback "$PG_HOST" && ! tcp_open "$PG_HOST" "$PG_PORT"; then
      : # installing the server below brings the client tools too
    else
      apt_install postgresql-client
    fi
  fi

  if pg_answers; then
    log "PostgreSQL answers at $(redact_url "$DATABASE_URL")"
    return 0
  fi
  if is_true "$SKIP_SERVERS"; then
    wait_provided PostgreSQL "$DATABASE_URL" pg_answers "SKIP_SERVERS=1"
  elif ! is_loopback "$PG_HOST"; then
    wait_provided PostgreSQL "$DATABASE_URL" pg_answers "host $PG_HOST is not this machine"
  else
    if tcp_open "$PG_HOST" "$PG_PORT"; then
      die "port $PG_PORT is in use, but not by a PostgreSQL that answers ($(redact_url "$DATABASE_URL"))"
    fi
    pg_start_local
    local ver name _port
    read -r ver name _port <"$FLASH_PIDS/postgres.cluster"
    if ! wait_until PostgreSQL pg_answers; then
      tail_log "/var/log/postgresql/postgresql-$ver-$name.log"
      die "PostgreSQL did not come up at $(redact_url "$DATABASE_URL") within ${FLASH_SERVER_WAIT_SECS}s"
    fi
    log "PostgreSQL is up at $(redact_url "$DATABASE_URL") (cluster $ver/$name, started by these scripts)"
  fi
}

# create_database: the database named in DATABASE_URL, created through the `postgres` database.
create_database() {
  local exists out err
  if ! have psql; then
    warn "psql missing; not checking that database '$PG_DB' exists"
    return 0
  fi
  # Only stdout is the answer: pg_wrapper may warn on stderr (no cluster on the default port).
  err="$(mktemp)"
  if ! exists="$(psql -w -X -At -v ON_ERROR_STOP=1 -v db="$PG_DB" -d "$PG_ADMIN_URL" 2>"$err" <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
)"; then
    out="$(<"$err")"
    rm -f "$err"
    die "cannot connect to PostgreSQL at $(redact_url "$PG_ADMIN_URL"): $out"
  fi
  rm -f "$err"
  if [[ $exists == 1 ]]; then
    log "database '$PG_DB' exists"
    return 0
  fi
  if ! out="$(psql -w -X -q -v ON_ERROR_STOP=1 -v db="$PG_DB" -d "$PG_ADMIN_URL" 2>&1 <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
)"; then
    # Another process may have created it meanwhile.
    [[ $out == *"already exists"* ]] || die "could not create database '$PG_DB': $out"
    log "database '$PG_DB' exists (created meanwhile)"
    return 0
  fi
  log "created database '$PG_DB'"
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_start_local() {
  local bin bind
  bin="$(find_bin redis-server)" || {
    apt_install redis-server
    bin="$(find_bin redis-server)" || die "redis-server still missing after apt-get install"
  }
  have redis-cli || apt_install redis-tools
  # Installing the package may have started Debian's own Redis on the default port.
  if redis_answers; then return 0; fi
  bind="$(bind_addr "$REDIS_HOST")"
  local args=(--daemonize yes --bind "$bind" --port "$REDIS_PORT" --save "" --appendonly no
    --dir "$FLASH_DATA_DIR" --pidfile "$FLASH_PIDS/redis.pid" --logfile "$FLASH_LOGS/redis.log")
  if [[ -n $REDIS_PASS ]]; then args+=(--requirepass "$REDIS_PASS"); fi
  log "starting Redis on $bind:$REDIS_PORT (nothing kept on disk)"
  "$bin" "${args[@]}" </dev/null >>"$FLASH_LOGS/redis.log" 2>&1 || die "redis-server failed to start; see $FLASH_LOGS/redis.log"
}

ensure_redis() {
  if ! have redis-cli; then
    if is_true "$SKIP_SERVERS"; then
      warn "redis-cli missing; checking Redis by TCP only"
    elif is_loopback "$REDIS_HOST" && ! tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
      : # installing the server below brings redis-cli too
    else
      apt_install redis-tools
    fi
  fi
  if redis_answers; then
    log "Redis answers at $(redact_url "$REDIS_URL")"
    return 0
  fi
  if is_true "$SKIP_SERVERS"; then
    wait_provided Redis "$REDIS_URL" redis_answers "SKIP_SERVERS=1"
  elif ! is_loopback "$REDIS_HOST"; then
    wait_provided Redis "$REDIS_URL" redis_answers "host $REDIS_HOST is not this machine"
  else
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
      die "port $REDIS_PORT is in use, but not by a Redis that answers PING ($(redact_url "$REDIS_URL"))"
    fi
    redis_start_local
    if ! wait_until Redis redis_answers; then
      tail_log "$FLASH_LOGS/redis.log"
      die "Redis did not come up at $(redact_url "$REDIS_URL") within ${FLASH_SERVER_WAIT_SECS}s"
    fi
    log "Redis is up at $(redact_url "$REDIS_URL")"
  fi
}

# ---------------------------------------------------------------------------------------------
# NATS with JetStream

nats_start_local() {
  local bin bind
  bin="$(find_bin nats-server)" || {
    apt_install nats-server
    bin="$(find_bin nats-server)" || die "nats-server still missing after apt-get install"
  }
  if nats_answers; then return 0; fi
  bind="$(bind_addr "$NATS_HOST")"
  mkdir -p "$FLASH_DATA_DIR/nats"
  log "starting NATS (JetStream, store $FLASH_DATA_DIR/nats) on $bind:$NATS_PORT"
  spawn_detached "$FLASH_PIDS/nats.pid" "$FLASH_LOGS/nats.log" \
    "$bin" -a "$bind" -p "$NATS_PORT" -js -sd "$FLASH_DATA_DIR/nats"
}

ensure_nats() {
  if nats_answers; then
    log "NATS answers at $(redact_url "$NATS_URL")"
  elif is_true "$SKIP_SERVERS"; then
    wait_provided NATS "$NATS_URL" nats_answers "SKIP_SERVERS=1"
  elif ! is_loopback "$NATS_HOST"; then
    wait_provided NATS "$NATS_URL" nats_answers "host $NATS_HOST is not this machine"
  else
    if tcp_open "$NATS_HOST" "$NATS_PORT"; then
      die "port $NATS_PORT is in use, but not by a NATS server ($(redact_url "$NATS_URL"))"
    fi
    nats_start_local
    if ! wait_until NATS nats_answers; then
      tail_log "$FLASH_LOGS/nats.log"
      die "NATS did not come up at $(redact_url "$NATS_URL") within ${FLASH_SERVER_WAIT_SECS}s"
    fi
    log "NATS is up at $(redact_url "$NATS_URL")"
  fi
  if [[ "$(nats_info)" != *'"jetstream":true'* ]]; then
    warn "NATS at $(redact_url "$NATS_URL") does not report JetStream enabled; the services need it (nats-server -js)"
  fi
}

# ---------------------------------------------------------------------------------------------
# All three

# ensure_servers: PostgreSQL, Redis and NATS answer at their URLs (started locally when needed),
# and the database named in DATABASE_URL exists.
ensure_servers() {
  ensure_dirs
  resolve_servers
  if is_true "$SKIP_SERVERS"; then
    log "SKIP_SERVERS=$SKIP_SERVERS: using the PostgreSQL, Redis and NATS provided; starting none"
  fi
  ensure_postgres
  ensure_redis
  ensure_nats
  create_database
}

# stop_servers: stops the servers recorded as started by these scripts, and only those.
stop_servers() {
  local pid ver name port
  if pid="$(running_pid "$FLASH_PIDS/redis.pid" redis-server)"; then
    log "stopping Redis (pid $pid, started by these scripts)"
    stop_pid Redis "$pid"
  fi
  rm -f "$FLASH_PIDS/redis.pid"
  if pid="$(running_pid "$FLASH_PIDS/nats.pid" nats-server)"; then
    log "stopping NATS (pid $pid, started by these scripts)"
    stop_pid NATS "$pid"
  fi
  rm -f "$FLASH_PIDS/nats.pid"
  if [[ -s $FLASH_PIDS/postgres.cluster ]]; then
    read -r ver name port <"$FLASH_PIDS/postgres.cluster"
    if have pg_lsclusters && pg_cluster_online "$ver" "$name"; then
      log "stopping PostgreSQL cluster $ver/$name on port $port (started by these scripts)"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop ||
        warn "pg_ctlcluster $ver $name stop failed"
    fi
    rm -f "$FLASH_PIDS/postgres.cluster"
  fi
}

# servers_status: one line per server: answering or not, and whether these scripts started it.
servers_status() {
  local pid ver name port ours
  resolve_servers
  ours=''
  if [[ -s $FLASH_PIDS/postgres.cluster ]]; then
    read -r ver name port <"$FLASH_PIDS/postgres.cluster"
    ours=" (cluster $ver/$name, started by scripts/stack)"
  fi
  if pg_answers; then
    printf '%-12s running  %s%s\n' postgres "$(redact_url "$DATABASE_URL")" "$ours"
  else
    printf '%-12s stopped  %s\n' postgres "$(redact_url "$DATABASE_URL")"
  fi
  ours=''
  if pid="$(running_pid "$FLASH_PIDS/redis.pid" redis-server)"; then ours=" (pid $pid, started by scripts/stack)"; fi
  if redis_answers; then
    printf '%-12s running  %s%s\n' redis "$(redact_url "$REDIS_URL")" "$ours"
  else
    printf '%-12s stopped  %s\n' redis "$(redact_url "$REDIS_URL")"
  fi
  ours=''
  if pid="$(running_pid "$FLASH_PIDS/nats.pid" nats-server)"; then ours=" (pid $pid, started by scripts/stack)"; fi
  if nats_answers; then
    printf '%-12s running  %s%s\n' nats "$(redact_url "$NATS_URL")" "$ours"
  else
    printf '%-12s stopped  %s\n' nats "$(redact_url "$NATS_URL")"
  fi
}
