#!/bin/bash
# How faithfully a tc tbf-shaped veth pair stands for a wire: times messages of a
# tensor-parallel pass's sizes (58 kB: an f32 piece at 8 sequences; 7 kB and 1.8 kB: f32 and
# q8 pieces at one) sent 0.8 ms apart, as a pass's exchanges are, and 4 MB back to back, at
# RATES with each BURSTS bucket ("auto": mesh-netns.sh's default for the rate). A wire carries a
# message at its rate whatever came before; a bucket that refills in the gap lets it through
# at veth speed instead. Times include the answer's round trip (~0.05 ms on veth).
# Needs root; deletes its namespaces on exit.
# Usage: [RATES="1gbit 100mbit"] [BURSTS="256kb 64kb auto"] bash bench/link-fidelity.sh
set -euo pipefail
P=$(realpath "$(dirname "$0")/python/piece_times.py")
unset B  # no onebit here: mesh-netns.sh then writes no mesh key
. "$(dirname "$0")/mesh-netns.sh" none
date; uname -r
piece() {
  ip netns exec $W python3 "$P" server 10.232.9.2 7700 & local s=$!
  ip netns exec $A python3 "$P" client 10.232.9.2 7700 "$@"; wait $s || true
}
for rate in ${RATES:-1gbit 100mbit}; do
  for burst in ${BURSTS:-256kb 64kb auto}; do
    if [ "$burst" = auto ]; then unset BURST; else BURST=$burst; fi
    shape "$rate"
    echo "== tbf rate $rate, bucket $(bucket "$rate") ($burst)"
    piece 4000000 0 20; piece 58000 0.8 300; piece 7000 0.8 300; piece 1800 0.8 300
  done
done
