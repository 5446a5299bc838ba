#!/usr/bin/env bash
# Two onebit binaries (before / after a change) alternated over ROUNDS rounds on one model:
# decode at one token and at BATCH sequences, at the default kernels and with ONEBIT_KERNEL
# forcing each ISA in KERNELS. Prints lscpu, every line, then the values per configuration.
# Never run in CI.
#
#   ROUNDS=4 KERNELS="avx2" bash bench/ab-decode.sh BEFORE_BIN AFTER_BIN MODEL.gguf
set -euo pipefail
A=${1:?before binary}; B=${2:?after binary}; M=${3:?model}
ROUNDS=${ROUNDS:-4}; BATCH=${BATCH:-16}; THREADS=${THREADS:-2}
lscpu | grep -E 'Model name|Flags' | cut -c1-600
date -u
out=$(mktemp); trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  for k in default ${KERNELS:-}; do
    for side in before after; do
      bin=$A; [ "$side" = after ] && bin=$B
      envs=(); [ "$k" != default ] && envs=(ONEBIT_KERNEL="$k")
      env "${envs[@]}" "$bin" bench "$M" -p 0 -n 32 -t "$THREADS" --batch "1,$BATCH" -r 3 2>&1 |
        grep -E '^(cpu|tg)' | sed "s/^/round $r $k $side: /" | tee -a "$out"
    done
  done
done
echo "== tok/s per configuration (every round)"
grep ': tg' "$out" | awk '{k=$3" "$4" "$5; a[k]=a[k]" "$6} END {for (k in a) print k a[k]}' | sort
