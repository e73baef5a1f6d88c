#!/usr/bin/env bash
# docker.sh: run gpu-sidecar in Docker on a GPU host (worker + Redis) or a front host (relay).
# Keeps the seed's interface (`./docker.sh rebuild`, `./docker.sh pull`) and adds up, down, logs,
# status, doctor and keygen. Configuration: .env next to this script (or --env-file FILE), the same file
# the daemons read (.env.template); variables already in the environment win. docs/DEPLOY.md.
set -euo pipefail

PROG=docker.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
Usage: ./docker.sh [--env-file FILE] COMMAND [worker|relay|redis]

Commands (the target defaults to worker, the GPU host's daemon):
  rebuild [worker|relay]  build the image, then recreate the container (a running worker gets
                          SIGTERM and STOP_TIMEOUT seconds to hand its jobs back). The worker's
                          Redis is started if needed but never recreated: queued jobs survive.
  pull [worker|relay]     git pull --ff-only, then rebuild
  up [worker|relay]       create (from the built image) or start the containers
                          rebuild, pull and up wait until the daemon is ready (READY_TIMEOUT
                          seconds, 90) and fail with its last log lines when it is not
  down [worker|relay]     stop and remove the container; Redis is stopped, its data kept
  logs [worker|relay|redis]  follow a container's log (LINES=200 lines of history)
  status [worker|relay]   container state, GET /test (worker: the API; relay: through the
                          tunnel), GPUs inside the container, Redis persistence; exit 1 if not ok
  doctor [worker|relay]   gpu-sidecar doctor inside the container, with the daemon's environment
  keygen [FILE]           make a key file (default: the first of TUNNEL_KEY_FILE)

Options:
  --env-file FILE  read variables from FILE instead of .env next to this script
  -h, --help       this help

Read from .env (see .env.template): TUNNEL_KEY_FILE (required), DATA_FOLDER (worker, required),
TUNNEL_CONNECT (relay, required), GPU_DEVICES (all|none|0,1|GPU-uuid; default all), JOB_UID
(uid[:gid] the worker container runs as; default yours), TUNNEL_LISTEN, API_LISTEN, REDIS_URL
(set: use that Redis, start none), EXPERIMENTS_DIR, RELAY_LISTEN, ADMIN_LISTEN, DOCKER_HOST,
and the other daemon variables, passed through.
docker.sh's own: GPU_SIDECAR_IMAGE (gpu-sidecar:latest), NODE_IMAGE (build base), APP_FROM
(source, or prebuilt: build from this checkout's dist/ and node_modules, no npm registry needed),
REDIS_IMAGE (redis:7-bookworm), STOP_TIMEOUT (300 s), READY_TIMEOUT (90 s), DOCKER_GID (the
socket's group).
EOF
}

die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 2
}
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
say() { printf '%s: %s\n' "$PROG" "$*"; }

# ---------------------------------------------------------------- arguments
env_file=
env_file_given=0
cmd=
target=
while (($#)); do
  case $1 in
    -h | --help | help)
      usage
      exit 0
      ;;
    --env-file)
      (($# >= 2)) || die "--env-file needs a FILE"
      env_file=$2
      env_file_given=1
      shift 2
      ;;
    --env-file=*)
      env_file=${1#--env-file=}
      env_file_given=1
      shift
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *)
      if [[ -z $cmd ]]; then
        cmd=$1
      elif [[ -z $target ]]; then
        target=$1
      else
        die "too many arguments: $1 (see --help)"
      fi
      shift
      ;;
  esac
done
if [[ -z $cmd ]]; then
  usage >&2
  exit 2
fi

# ---------------------------------------------------------------- configuration
# KEY=VALUE lines; comments, blank lines and `export ` prefixes allowed; one level of quotes
# stripped. The file is parsed, never executed, and the environment wins over it.
load_env_file() {
  local file=$1 line key val
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[![:space:]]*}"}
    [[ -z $line || $line == \#* ]] && continue
    line=${line#export }
    [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    val=${BASH_REMATCH[2]}
    if [[ $val =~ ^\"(.*)\"$ || $val =~ ^\'(.*)\'$ ]]; then
      val=${BASH_REMATCH[1]}
    fi
    if [[ -z ${!key+x} ]]; then
      printf -v "$key" '%s' "$val"
      export "${key?}"
    fi
  done <"$file"
}

if ((env_file_given)); then
  [[ -f $env_file ]] || die "--env-file $env_file: no such file"
  load_env_file "$env_file"
elif [[ -f $HERE/.env ]]; then
  env_file=$HERE/.env
  load_env_file "$env_file"
fi

IMAGE=${GPU_SIDECAR_IMAGE:-gpu-sidecar:latest}
REDIS_IMAGE=${REDIS_IMAGE:-redis:7-bookworm}
STOP_TIMEOUT=${STOP_TIMEOUT:-300}
READY_TIMEOUT=${READY_TIMEOUT:-90}
NETWORK=gpu-sidecar
WORKER=gpu-sidecar-worker
RELAY=gpu-sidecar-relay
REDIS=gpu-sidecar-redis
REDIS_VOLUME=gpu-sidecar-redis-data

# Names every required variable that is unset or empty, then exits 2.
require() {
  local name missing=0
  for name in "$@"; do
    if [[ -z ${!name:-} ]]; then
      printf '%s: %s is not set (see .env.template)\n' "$PROG" "$name" >&2
      missing=1
    fi
  done
  ((missing == 0)) || exit 2
}

# An absolute path; relative paths are taken from this script's folder, like the seed's.
abs_path() {
  case $1 in
    /*) printf '%s' "$1" ;;
    *) printf '%s/%s' "$HERE" "${1#./}" ;;
  esac
}

# host:port -> port, host:port -> host
port_of() { printf '%s' "${1##*:}"; }
host_of() { printf '%s' "${1%:*}"; }

# The key files, absolute, comma-separated; each must exist and be private.
key_files=()
check_keys() {
  local list k uid want
  IFS=, read -r -a list <<<"$TUNNEL_KEY_FILE"
  key_files=()
  for k in "${list[@]}"; do
    [[ -n $k ]] || continue
    k=$(abs_path "$k")
    [[ -f $k ]] || die "TUNNEL_KEY_FILE: $k: no such file (make one: ./docker.sh keygen $k)"
    if [[ $(stat -c %a "$k") != [0-7]00 ]]; then
      die "TUNNEL_KEY_FILE: $k is readable by group or others (chmod 600 $k)"
    fi
    uid=$(stat -c %u "$k")
    want=${1:-}
    if [[ -n $want && $want != 0 && $uid != "$want" ]]; then
      warn "$k is owned by uid $uid but the container runs as uid $want and cannot read it (chown $want $k)"
    fi
    key_files+=("$k")
  done
  ((${#key_files[@]})) || die "TUNNEL_KEY_FILE is empty (see .env.template)"
}

# ---------------------------------------------------------------- docker helpers
exists() { docker container inspect "$1" >/dev/null 2>&1; }
state_of() {
  docker container inspect -f '{{.State.Status}}{{if .State.Health}} ({{.State.Health.Status}}){{end}}' "$1" 2>/dev/null ||
    printf 'absent'
}

ensure_network() {
  docker network inspect "$NETWORK" >/dev/null 2>&1 || docker network create "$NETWORK" >/dev/null
}

# BullMQ's Redis: AOF on a named volume, noeviction. Created once, started when stopped, and
# never removed here: the queue outlives every worker container.
ensure_redis() {
  if [[ -n ${REDIS_URL:-} ]]; then
    return 0
  fi
  if exists "$REDIS"; then
    if [[ $(docker container inspect -f '{{.State.Running}}' "$REDIS") != true ]]; then
      say "starting $REDIS"
      docker start "$REDIS" >/dev/null
    fi
    return 0
  fi
  say "creating $REDIS (volume $REDIS_VOLUME)"
  docker volume create "$REDIS_VOLUME" >/dev/null
  # --dir and --protected-mode say what the official image's entrypoint would (AOF on the
  # volume; other containers may connect), so any image with redis-server works as REDIS_IMAGE.
  # Redis is reachable on the gpu-sidecar network only, never published.
  docker run --detach --name "$REDIS" --network "$NETWORK" --restart unless-stopped \
    --volume "$REDIS_VOLUME:/data" \
    "$REDIS_IMAGE" redis-server --appendonly yes --appendfsync everysec \
    --maxmemory-policy noeviction --dir /data --protected-mode no >/dev/null
}

# APP_FROM=prebuilt: the context is this checkout's dist/ and production node_modules
# (scripts/offline-build-context.sh), for builders that reach no npm registry.
build_image() {
  local args=(build --file "$HERE/docker/Dockerfile" --tag "$IMAGE") context=$HERE tmp='' rc=0
  if [[ -n ${NODE_IMAGE:-} ]]; then
    args+=(--build-arg "NODE_IMAGE=$NODE_IMAGE")
  fi
  case ${APP_FROM:-source} in
    source) ;;
    prebuilt)
      tmp=$(mktemp -d)
      context=$tmp/context
      "$HERE/scripts/offline-build-context.sh" "$context" >/dev/null || {
        rm -rf "$tmp"
        die "APP_FROM=prebuilt needs this checkout built: npm ci && npm run build"
      }
      args+=(--build-arg APP_FROM=prebuilt)
      ;;
    *) die "APP_FROM: source or prebuilt, not '$APP_FROM'" ;;
  esac
  say "building $IMAGE"
  docker "${args[@]}" "$context" || rc=$?
  [[ -z $tmp ]] || rm -rf "$tmp"
  return "$rc"
}

need_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE not found (build it: ./docker.sh rebuild $1)"
}

# SIGTERM, then STOP_TIMEOUT seconds for running jobs to finish or go back to the queue.
remove_container() {
  if exists "$1"; then
    say "stopping $1 (up to ${STOP_TIMEOUT}s)"
    docker stop --time "$STOP_TIMEOUT" "$1" >/dev/null || true
    docker rm --force "$1" >/dev/null
  fi
}

# Passes these variables to the container when set.
passthrough_env() {
  local name
  for name in "$@"; do
    if [[ -n ${!name:-} ]]; then
      run_args+=(--env "$name=${!name}")
    fi
  done
}

# Mounts a host file or folder read-only at the same path (paths in env values stay valid).
mount_same() {
  run_args+=(--volume "$1:$1:ro")
}

# DATA_FOLDER, made and given to the container's user (uid[:gid]) as keygen does the key: the
# worker writes jobs/, redis/ and jobs/.uploads there, and a root-owned folder made it crash-loop
# on EACCES. Only its top level: what a previous user left inside is named, not chowned.
prepare_data() {
  local data=$1 user=$2 uid owner
  uid=${user%%:*}
  mkdir -p "$data"
  owner=$(stat -c %u "$data")
  if [[ $owner == "$uid" || $uid == 0 ]]; then
    return 0
  fi
  if [[ $(id -u) == 0 ]]; then
    chown "$user" "$data"
    say "DATA_FOLDER $data is now owned by $user (the container's user)"
    local other
    other=$(find "$data" -mindepth 1 -maxdepth 2 ! -uid "$uid" -print -quit)
    if [[ -n $other ]]; then
      warn "$other is not owned by $user: the worker may not write there (chown -R $user $data)"
    fi
  elif [[ ! -w $data ]] || [[ $(id -u) != "$uid" ]]; then
    die "DATA_FOLDER $data is owned by uid $owner but the container runs as $user and must write there (sudo chown $user $data, or run docker.sh as root)"
  fi
}

# Waits until the daemon in container $1 answers `url` ($2) with 2xx; fails early, with its
# last log lines, when the container stops or restarts (a crash loop), or after READY_TIMEOUT.
wait_ready() {
  local name=$1 url=$2 what=$3 deadline state restarts before body
  deadline=$((SECONDS + READY_TIMEOUT))
  say "waiting for $what to be ready (up to ${READY_TIMEOUT}s): $url"
  before=
  while :; do
    read -r state restarts < <(docker container inspect -f '{{.State.Status}} {{.RestartCount}}' "$name" 2>/dev/null || echo "absent 0")
    before=${before:-$restarts}
    if [[ $state != running ]]; then
      not_ready "$name" "$what is not running ($state, restarted $restarts times)"
    elif [[ $restarts != "$before" ]]; then
      not_ready "$name" "$what restarted while starting (a crash loop)"
    fi
    if body=$(http_get "$url" 2>&1); then
      say "$what is ready: $body"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      not_ready "$name" "$what did not answer $url within ${READY_TIMEOUT}s: ${body:-no answer}"
    fi
    sleep 1
  done
}

not_ready() {
  printf '%s: %s; its last log lines:\n' "$PROG" "$2" >&2
  docker logs --tail "${LINES:-30}" "$1" 2>&1 | sed 's/^/    /' >&2 || true
  printf '%s: see ./docker.sh logs, fix, then ./docker.sh up\n' "$PROG" >&2
  exit 1
}

# The worker's readiness: its API's /health/ready, on the host's side of the published port.
worker_ready() {
  local api=${API_LISTEN:-127.0.0.1:8000}
  if [[ $(host_of "$api") == 0.0.0.0 ]]; then api=127.0.0.1:$(port_of "$api"); fi
  wait_ready "$WORKER" "http://$api/health/ready" "the worker"
}

# The relay's readiness: its /healthz is 200 once a tunnel to a worker is up.
relay_ready() {
  wait_ready "$RELAY" "http://${ADMIN_LISTEN:-127.0.0.1:9464}/healthz" "the relay's tunnel"
}

# Everything that can be checked before touching Docker: variables, key files.
preflighted=0
preflight() {
  ((preflighted == 0)) || return 0
  preflighted=1
  local user=${JOB_UID:-$(id -u):$(id -g)}
  if [[ $1 == worker ]]; then require TUNNEL_KEY_FILE DATA_FOLDER; else require TUNNEL_KEY_FILE TUNNEL_CONNECT; fi
  check_keys "${user%%:*}"
}

create_worker() {
  preflight worker
  local user=${JOB_UID:-$(id -u):$(id -g)}
  local data gpus tunnel api api_port tunnel_port socket gid k experiments
  data=$(abs_path "$DATA_FOLDER")
  prepare_data "$data" "$user"
  gpus=${GPU_DEVICES:-all}
  tunnel=${TUNNEL_LISTEN:-0.0.0.0:8080}
  api=${API_LISTEN:-127.0.0.1:8000}
  tunnel_port=$(port_of "$tunnel")
  api_port=$(port_of "$api")

  run_args=(run --detach --name "$WORKER" --hostname "${WORKER_NAME:-$HOSTNAME}"
    --network "$NETWORK" --restart unless-stopped --stop-timeout "$STOP_TIMEOUT"
    --user "$user")
  case $gpus in
    none) ;;
    all) run_args+=(--gpus all) ;;
    # Quoted: the docker CLI reads --gpus as CSV, so a bare device=0,1 would split at the comma.
    *) run_args+=(--gpus "\"device=$gpus\"") ;;
  esac
  # Job containers are siblings started by the host's Engine, which resolves their bind mounts
  # on the host: DATA_FOLDER is mounted at the same absolute path.
  run_args+=(--volume "$data:$data" --env "DATA_FOLDER=$data")
  # The Docker Engine: the socket, and its group so a non-root worker may use it.
  socket=${DOCKER_HOST:-unix:///var/run/docker.sock}
  if [[ $socket == unix://* ]]; then
    socket=${socket#unix://}
    gid=${DOCKER_GID:-$(stat -c %g "$socket" 2>/dev/null || true)}
    run_args+=(--volume "$socket:/var/run/docker.sock" --env DOCKER_HOST=unix:///var/run/docker.sock)
    if [[ -n $gid ]]; then
      run_args+=(--group-add "$gid")
    else
      warn "cannot read the group of $socket: set DOCKER_GID"
    fi
  else
    run_args+=(--env "DOCKER_HOST=$socket")
  fi
  for k in "${key_files[@]}"; do mount_same "$k"; done
  run_args+=(--env "TUNNEL_KEY_FILE=$(
    IFS=,
    printf '%s' "${key_files[*]}"
  )")
  # Tunnel published on the host; the API listens on the container's interfaces but is
  # published on the host's loopback only (or where API_LISTEN says).
  run_args+=(--publish "$(host_of "$tunnel"):$tunnel_port:$tunnel_port" --env "TUNNEL_LISTEN=0.0.0.0:$tunnel_port")
  run_args+=(--publish "$(host_of "$api"):$api_port:$api_port" --env "API_LISTEN=0.0.0.0:$api_port")
  if [[ -n ${REDIS_URL:-} ]]; then
    run_args+=(--env "REDIS_URL=$REDIS_URL")
  else
    run_args+=(--env "REDIS_URL=redis://$REDIS:6379")
  fi
  if [[ -n ${EXPERIMENTS_DIR:-} ]]; then
    experiments=$(abs_path "$EXPERIMENTS_DIR")
    if [[ ! -d $experiments ]]; then
      warn "EXPERIMENTS_DIR: $experiments did not exist: created it empty (one YAML file per experiment)"
      mkdir -p "$experiments"
    fi
    mount_same "$experiments"
    run_args+=(--env "EXPERIMENTS_DIR=$experiments")
  fi
  for k in ${TUNNEL_TLS_CERT:+"$TUNNEL_TLS_CERT"} ${TUNNEL_TLS_KEY:+"$TUNNEL_TLS_KEY"}; do mount_same "$k"; done
  run_args+=(--env "GPU_DEVICES=$gpus" --env "JOB_UID=$user" --env "WORKER_NAME=${WORKER_NAME:-$HOSTNAME}")
  # The image's HEALTHCHECK asks 127.0.0.1:8000; elsewhere, say where.
  if [[ $api_port != 8000 ]]; then
    run_args+=(--env "HEALTHCHECK_URL=http://127.0.0.1:$api_port/test")
  fi
  # Inside, API_LISTEN is 0.0.0.0: the address it is published on must be named to the API's
  # Host check (API_HOSTS), as the worker does for its own API_LISTEN host outside Docker.
  local api_hosts=${API_HOSTS:-} api_host
  api_host=$(host_of "$api")
  case $api_host in
    127.* | localhost | '[::1]' | 0.0.0.0 | '[::]') ;;
    *) api_hosts=${api_hosts:+$api_hosts,}$api_host ;;
  esac
  if [[ -n $api_hosts ]]; then run_args+=(--env "API_HOSTS=$api_hosts"); fi
  passthrough_env LOG_LEVEL WORKER_CONCURRENCY GPU_SLOTS_PER_DEVICE GPU_SAMPLE_INTERVAL \
    HEALTH_SAMPLE_INTERVAL GPU_MAX_TEMP HEALTH_CONTAINERS RESULTS_TTL MIN_FREE_DISK MAX_UPLOAD \
    QUEUE_UI TUNNEL_CONNECT TUNNEL_TLS_CERT TUNNEL_TLS_KEY HTTPS_PROXY
  run_args+=("$IMAGE" worker)
  say "creating $WORKER (GPUs: $gpus, data: $data, user: $user)"
  docker "${run_args[@]}" >/dev/null
}

create_relay() {
  preflight relay
  local user=${JOB_UID:-$(id -u):$(id -g)} k admin
  admin=${ADMIN_LISTEN:-127.0.0.1:9464}
  # Host network: RELAY_LISTEN is the host's own loopback port, where spiped used to be.
  run_args=(run --detach --name "$RELAY" --network host --restart unless-stopped --user "$user")
  for k in "${key_files[@]}"; do mount_same "$k"; done
  run_args+=(--env "TUNNEL_KEY_FILE=$(
    IFS=,
    printf '%s' "${key_files[*]}"
  )")
  for k in ${TUNNEL_TLS_CERT:+"$TUNNEL_TLS_CERT"} ${TUNNEL_TLS_KEY:+"$TUNNEL_TLS_KEY"}; do mount_same "$k"; done
  run_args+=(--env "RELAY_LISTEN=${RELAY_LISTEN:-127.0.0.1:8001}" --env "ADMIN_LISTEN=$admin"
    --env "HEALTHCHECK_URL=http://$admin/healthz")
  passthrough_env TUNNEL_CONNECT TUNNEL_LISTEN RELAY_FORWARDS RELAY_FORWARDS_SERVER_FIRST ADMIN_HOSTS \
    LOG_LEVEL TUNNEL_TLS_CERT TUNNEL_TLS_KEY HTTPS_PROXY
  run_args+=("$IMAGE" relay)
  say "creating $RELAY"
  docker "${run_args[@]}" >/dev/null
}

# ---------------------------------------------------------------- status
failures=0
ok() { printf 'ok    %s\n' "$*"; }
bad() {
  printf 'FAIL  %s\n' "$*"
  failures=$((failures + 1))
}

# GET url; prints the body. curl, else wget.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 5 "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -T 5 -O - "$1"
  else
    echo "neither curl nor wget is installed" >&2
    return 1
  fi
}

check_container() {
  local s
  s=$(state_of "$1")
  case $s in
    running | "running (healthy)" | "running (starting)") ok "$1: $s" ;;
    absent) bad "$1: absent (create it: ./docker.sh up $2)" ;;
    *) bad "$1: $s (see ./docker.sh logs $2)" ;;
  esac
}

check_test() {
  local body
  if body=$(http_get "$1" 2>&1) && [[ $body == *'"response":"ok"'* ]]; then
    ok "GET $1: $body"
  else
    bad "GET $1: ${body:-no answer} ($2)"
  fi
}

status_worker() {
  local api gpus out policy aof
  api=${API_LISTEN:-127.0.0.1:8000}
  if [[ $(host_of "$api") == 0.0.0.0 ]]; then api=127.0.0.1:$(port_of "$api"); fi
  gpus=${GPU_DEVICES:-all}
  check_container "$WORKER" worker
  if [[ -z ${REDIS_URL:-} ]]; then
    check_container "$REDIS" worker
    policy=$(docker exec "$REDIS" redis-cli config get maxmemory-policy 2>/dev/null | tail -n 1 || true)
    aof=$(docker exec "$REDIS" redis-cli config get appendonly 2>/dev/null | tail -n 1 || true)
    if [[ $policy == noeviction && $aof == yes ]]; then
      ok "redis: appendonly yes, maxmemory-policy noeviction"
    else
      bad "redis: appendonly '${aof:-?}', maxmemory-policy '${policy:-?}' (queued jobs can be lost: remove $REDIS, keep volume $REDIS_VOLUME, then ./docker.sh up)"
    fi
  fi
  check_test "http://$api/test" "the worker's job API; see ./docker.sh logs worker"
  if [[ $gpus != none ]]; then
    if out=$(docker exec "$WORKER" nvidia-smi -L 2>&1) && [[ $out == *GPU* ]]; then
      ok "GPUs inside $WORKER:"
      printf '        %s\n' "${out//$'\n'/$'\n'        }"
    else
      bad "GPUs inside $WORKER: ${out:-none} (install the NVIDIA Container Toolkit and check GPU_DEVICES=$gpus)"
    fi
  fi
}

status_relay() {
  local admin
  admin=${ADMIN_LISTEN:-127.0.0.1:9464}
  check_container "$RELAY" relay
  check_test "http://${RELAY_LISTEN:-127.0.0.1:8001}/test" "through the tunnel: is the worker up and its tunnel port open in the GPU host's firewall and cloud security list?"
  if out=$(http_get "http://$admin/healthz" 2>&1); then
    ok "GET http://$admin/healthz: $out"
  else
    bad "GET http://$admin/healthz: ${out:-no answer} (no healthy tunnel: ./docker.sh logs relay)"
  fi
}

# ---------------------------------------------------------------- commands
arg=$target
target=${target:-worker}
case $cmd in
  rebuild | pull | up | down | status | doctor)
    [[ $target == worker || $target == relay ]] || die "$cmd: unknown target '$target' (worker or relay)"
    ;;
  logs)
    [[ $target == worker || $target == relay || $target == redis ]] || die "logs: unknown target '$target' (worker, relay or redis)"
    ;;
esac

case $cmd in
  rebuild | pull)
    if [[ $cmd == pull ]]; then
      say "git pull --ff-only in $HERE"
      git -C "$HERE" pull --ff-only
    fi
    # Check the configuration before building, and build before stopping anything: a bad
    # .env or a failed build leaves the running container alone.
    preflight "$target"
    build_image
    if [[ $target == worker ]]; then
      ensure_network
      ensure_redis
      remove_container "$WORKER"
      create_worker
      worker_ready
    else
      remove_container "$RELAY"
      create_relay
      relay_ready
    fi
    say "done: ./docker.sh status $target"
    ;;
  up)
    preflight "$target"
    need_image "$target"
    if [[ $target == worker ]]; then
      ensure_network
      ensure_redis
      if exists "$WORKER"; then docker start "$WORKER" >/dev/null; else create_worker; fi
      worker_ready
    else
      if exists "$RELAY"; then docker start "$RELAY" >/dev/null; else create_relay; fi
      relay_ready
    fi
    say "up: ./docker.sh status $target"
    ;;
  down)
    if [[ $target == worker ]]; then
      remove_container "$WORKER"
      if exists "$REDIS"; then
        say "stopping $REDIS (data kept in volume $REDIS_VOLUME)"
        docker stop "$REDIS" >/dev/null
      fi
    else
      remove_container "$RELAY"
    fi
    ;;
  logs)
    case $target in
      worker) name=$WORKER ;;
      relay) name=$RELAY ;;
      *) name=$REDIS ;;
    esac
    exec docker logs --follow --tail "${LINES:-200}" "$name"
    ;;
  status)
    if [[ $target == worker ]]; then status_worker; else status_relay; fi
    if ((failures)); then
      printf '%s problem(s)\n' "$failures"
      exit 1
    fi
    printf 'all ok\n'
    ;;
  doctor)
    # Inside the container: the very environment docker.sh gave the daemon, its user, its view
    # of DATA_FOLDER, Redis and the Docker socket.
    if [[ $target == worker ]]; then name=$WORKER; else name=$RELAY; fi
    exists "$name" || die "$name does not exist (create it: ./docker.sh up $target)"
    say "gpu-sidecar doctor inside $name, with the environment docker.sh gave it"
    exec docker exec "$name" gpu-sidecar doctor "$target"
    ;;
  keygen)
    file=$arg
    if [[ -z $file ]]; then
      require TUNNEL_KEY_FILE
      file=${TUNNEL_KEY_FILE%%,*}
    fi
    file=$(abs_path "$file")
    [[ -e $file ]] && die "$file exists: not overwriting it (rotating? make a new file, docs/DEPLOY.md)"
    mkdir -p "$(dirname "$file")"
    if [[ -f $HERE/dist/apps/cli/src/main.js ]] && command -v node >/dev/null 2>&1; then
      "$HERE/bin/gpu-sidecar" keygen "$file"
    else
      # Not built here (a Docker-only host): the same thing gpu-sidecar keygen does, 32 random
      # bytes, mode 0600, never overwriting.
      (
        umask 077
        set -o noclobber
        head -c 32 /dev/urandom >"$file"
      )
      say "wrote $file (32 random bytes, mode 600)"
    fi
    # The containers run as JOB_UID: the key must be theirs to read.
    if [[ -n ${JOB_UID:-} && $(id -u) == 0 ]]; then
      chown "$JOB_UID" "$file"
    fi
    ;;
  *)
    die "unknown command: $cmd (see --help)"
    ;;
esac
