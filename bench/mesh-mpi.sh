#!/bin/bash
# Two processes on one 2-core box, 2B4T shape, decode at batch 1 and 8: one process on one
# core, one process with 2 threads, and tensor parallel / pipeline with one process per core
# (1 thread each) over onebit's TCP backend on loopback (Noise-encrypted), over MPI with
# OpenMPI's shared-memory transport, and over MPI forced onto TCP (`--mca btl tcp,self`).
# Needs a onebit built with `--features mpi` and OpenMPI (Debian: openmpi-bin).
# Usage: [ROUNDS=2] ONEBIT=target/release/onebit bash bench/mesh-mpi.sh [model.gguf]
set -euo pipefail
B=$(realpath "${ONEBIT:-target/release/onebit}")
M=${1:-/tmp/b4/2b4t.gguf}
ROUNDS=${ROUNDS:-2}
[ -f "$M" ] || { mkdir -p "$(dirname "$M")"; $B init --shape 2b4t -o "$M"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
$B mesh new-key -o "$D/mesh.key" >/dev/null
printf 'key_file = "mesh.key"\nhead = "127.0.0.1:7671"\nworkers = ["127.0.0.1:7672"]\n' > "$D/mesh.toml"
date; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; mpirun --version | head -1
B1=(bench "$M" -t 1 -p 0 -n 64 -r 3 --batch 1,8)
show() { grep -E "tg64|mesh:" | sed 's/^/    /'; }
tcp() {
  taskset -c 1 $B worker --listen 127.0.0.1:7672 --key-file "$D/mesh.key" --jobs 1 2>/dev/null &
  sleep 0.5
  taskset -c 0 $B "${B1[@]}" --mesh "$D/mesh.toml" --worker-threads 1 "$@" 2>&1 | show
  wait
}
mpi() { mpirun -n 2 --bind-to core "$@" 2>&1 | show; }
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  echo "one process, 1 thread (core 0)"; taskset -c 0 $B "${B1[@]}" 2>&1 | show
  echo "one process, 2 threads"; $B bench "$M" -t 2 -p 0 -n 64 -r 3 --batch 1,8 2>&1 | show
  echo "tensor parallel, onebit TCP (loopback)"; tcp --strategy tp
  echo "tensor parallel, MPI shared memory"; mpi $B "${B1[@]}" --mpi --strategy tp --worker-threads 1
  echo "tensor parallel, MPI over TCP (loopback)"; mpi --mca btl tcp,self $B "${B1[@]}" --mpi --strategy tp --worker-threads 1
  echo "pipeline, onebit TCP (loopback)"; tcp
  echo "pipeline, MPI shared memory"; mpi $B "${B1[@]}" --mpi --worker-threads 1
done
