#!/bin/sh
# pancake-queue.sh: load pancake into the queue broker of a Flux Operator
# MiniCluster, then keep that broker up.
#
# The queue container runs this as the initial program of its broker
# (`launcher: true` in minicluster.yaml), so every `flux` command here
# talks to the queue broker. It
#
#   1. copies pancake from the image into the shared view, where the
#      application containers' brokers can open the plugin too;
#   2. removes the broker's own scheduler (sched-simple, or Fluxion's
#      sched-fluxion-* modules): pancake is this broker's scheduler, and a
#      broker has one (start the broker with FLUX_SCHED_MODULE=none in its
#      environment and there is nothing to remove);
#   3. loads the jobtap plugin:  flux jobtap load .../pancake-bypass.so role=queue
#   4. loads the module:         flux module load .../pancake.so fluxion=... view=...
#      (the module loads pancake-bypass role=app into every application
#      broker it finds in the view);
#   5. runs its arguments, if any, else sleeps forever: the queue instance
#      lives as long as its initial program.
#
# Settings (environment; the defaults suit minicluster.yaml):
#   PANCAKE_VIEW     the operator's view root           (/mnt/flux/view)
#   PANCAKE_SRC      where the image keeps pancake      (/opt/pancake)
#   PANCAKE_FLUXION  grpc://HOST:PORT of Fluxion, or embedded
#                    (the MiniCluster's fluxion service on port 4242)
#   PANCAKE_OPTIONS  more module options, e.g. "strict=true queue-policy=easy"
#   PANCAKE_INGEST_BATCH_COUNT
#                    job-ingest's batch-count in the queue broker (1: commit
#                    each submitted job at once, not after job-ingest's 10 ms
#                    batching window: a container job reaches its application
#                    broker ~13 ms sooner; empty: keep flux-core's default)

set -eu

view=${PANCAKE_VIEW:-/mnt/flux/view}
src=${PANCAKE_SRC:-/opt/pancake}
fluxion=${PANCAKE_FLUXION:-grpc://flux-sample-services.flux-service.default.svc.cluster.local:4242}
dst=$view/pancake

mkdir -p "$dst"
for f in pancake.so pancake-bypass.so flux-pancake; do
    if [ -e "$src/$f" ]; then
        # Copy, then rename: never rewrite a file a broker may have mapped.
        cp "$src/$f" "$dst/.$f.new"
        mv -f "$dst/.$f.new" "$dst/$f"
    fi
done

# The queue broker only routes container jobs: favour latency over
# batching (this broker's ingest only; the application brokers keep theirs).
batch=${PANCAKE_INGEST_BATCH_COUNT-1}
if [ -n "$batch" ]; then
    flux module reload job-ingest "batch-count=$batch"
fi

# pancake is the queue broker's scheduler: the one rc1 loaded goes first
# (users have submitted nothing yet: this is the broker's initial program).
for m in sched-simple sched-fluxion-qmanager sched-fluxion-resource; do
    flux module remove -f "$m" 2>/dev/null || true
done

flux jobtap load "$dst/pancake-bypass.so" role=queue
# PANCAKE_OPTIONS is a list of words: leave it unquoted.
# shellcheck disable=SC2086
flux module load "$dst/pancake.so" "fluxion=$fluxion" "view=$view" \
    "plugin=$dst/pancake-bypass.so" ${PANCAKE_OPTIONS:-}

echo "pancake-queue: pancake loaded (fluxion=$fluxion view=$view)"
echo "pancake-queue: for flux pancake, export FLUX_EXEC_PATH=$dst"

if [ $# -gt 0 ]; then
    exec "$@"
fi
exec sleep infinity
