#!/usr/bin/env bash
# The images' entrypoint: run this container as one Ray node, or run a command.
#
#   entrypoint.sh head            a Ray head node, until SIGTERM
#   entrypoint.sh worker          a Ray worker node joining RAY_HEAD_ADDRESS, until SIGTERM
#   entrypoint.sh healthcheck     for a container started as head or worker: is its Ray cluster up (exit 0)?
#   entrypoint.sh COMMAND [ARG]   any command, e.g. onlinenorm sweep run ..., onlinenorm report ..., bash
#
# Settings, from the environment (empty or unset: the default in brackets):
#   RAY_HEAD_ADDRESS         worker: the head's HOST:PORT, e.g. head:6379 (required)
#   RAY_PORT                 head: the port nodes and drivers join at    [6379]
#   RAY_DASHBOARD_PORT       head: dashboard and job submission port     [8265]
#   RAY_DASHBOARD_HOST       head: interface the dashboard listens on    [0.0.0.0]
#   RAY_CLIENT_PORT          head: Ray Client (ray://) port               [Ray's: 10001 when ray[client] is installed]
#   RAY_NUM_CPUS, RAY_NUM_GPUS   resources this node offers               [detected]
#   RAY_NODE_IP              the address other nodes reach this node at   [detected]
#   RAY_OBJECT_STORE_MEMORY  object store size in bytes                   [Ray's default]
#   RAY_START_ARGS           more `ray start` options, split on spaces
#   RAY_TMPDIR               (Ray's own) parent of Ray's session files    [/tmp]
#   RAY_AUTH_MODE            (Ray's own) token: every node and client must hold the cluster's token;
#                            disabled: no authentication (an explicit opt-out)  [the images: token]
#   RAY_AUTH_TOKEN           (Ray's own) the cluster's token, the same on every node and client
#   RAY_AUTH_TOKEN_PATH      (Ray's own) a file holding it instead            [~/.ray/auth_token]
#
# On SIGTERM or SIGINT, `ray start --block` drains the node and stops every Ray
# process it started; this script exits 0 once it has.
set -euo pipefail

role_file="${RAY_TMPDIR:-/tmp}/onlinenorm-ray-node"
address_file="${RAY_TMPDIR:-/tmp}/ray/ray_current_cluster"  # written by `ray start`

# `ray start` options for the settings present in the environment.
node_options() {
    local option variable
    for option in num-cpus:RAY_NUM_CPUS num-gpus:RAY_NUM_GPUS node-ip-address:RAY_NODE_IP \
                  object-store-memory:RAY_OBJECT_STORE_MEMORY; do
        variable=${option#*:}
        if [[ -n ${!variable:-} ]]; then
            options+=("--${option%%:*}=${!variable}")
        fi
    done
    if [[ -n ${RAY_START_ARGS:-} ]]; then
        read -r -a extra <<<"$RAY_START_ARGS"
        options+=("${extra[@]}")
    fi
}

# A node must hold the cluster's token unless authentication is explicitly off: said here in one line,
# before `ray start` fails on it (or, with RAY_AUTH_MODE unset, starts a node anyone can use).
check_token() {
    [[ ${RAY_AUTH_MODE:-token} == disabled ]] && return 0
    [[ -n ${RAY_AUTH_TOKEN:-} ]] && return 0
    local file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
    [[ -r $file && -s $file ]] && return 0
    echo "entrypoint: token authentication is on but this node has no token: set RAY_AUTH_TOKEN (or" \
         "RAY_AUTH_TOKEN_PATH, a file holding it) to the cluster's token on every node and client," \
         "or opt out with RAY_AUTH_MODE=disabled on all of them" >&2
    exit 2
}

run_node() {
    check_token
    echo "$1" >"$role_file"
    rm -f "$address_file"  # left by an earlier run of this container: not this node's cluster yet
    ray start "${options[@]}" --block &
    ray_pid=$!
    trap 'stopping=1; kill -TERM "$ray_pid" 2>/dev/null || true' TERM INT
    # A trapped signal interrupts `wait`; wait again until `ray start` has stopped its processes.
    while true; do
        status=0
        wait "$ray_pid" || status=$?
        kill -0 "$ray_pid" 2>/dev/null || break
    done
    if [[ -n ${stopping:-} ]]; then
        exit 0
    fi
    echo "entrypoint: ray start exited with status $status" >&2
    exit "$status"
}

healthcheck() {
    [[ -f $role_file ]] || exit 0  # a command container (sweep, report, shell): nothing to check
    [[ -f $address_file ]] || exit 1  # Ray is still starting
    exec ray health-check --address "$(<"$address_file")"
}

options=()
case "${1:-}" in
    head)
        options=(--head --port="${RAY_PORT:-6379}"
                 --dashboard-host="${RAY_DASHBOARD_HOST:-0.0.0.0}" --dashboard-port="${RAY_DASHBOARD_PORT:-8265}")
        if [[ -n ${RAY_CLIENT_PORT:-} ]]; then
            options+=(--ray-client-server-port="$RAY_CLIENT_PORT")
        fi
        node_options
        run_node head
        ;;
    worker)
        options=(--address="${RAY_HEAD_ADDRESS:?worker: set RAY_HEAD_ADDRESS to the head node as HOST:PORT, e.g. head:6379}")
        node_options
        run_node worker
        ;;
    healthcheck)
        healthcheck
        ;;
    "")
        echo "usage: entrypoint.sh head | worker | healthcheck | COMMAND [ARG...]" >&2
        exit 2
        ;;
    *)
        exec "$@"
        ;;
esac
