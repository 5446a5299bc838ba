# Sourced by the bench/mesh-*.sh scripts that need a link between two machines on one: two
# network namespaces $A (the head, 10.232.9.1:7661) and $W (the worker, 10.232.9.2:7662)
# joined by a veth pair, shaped with `tc tbf` at $1 on both ends unless $1 is "none"; a key
# and a mesh file in $D. Deletes the namespaces and $D on exit. Needs root.
# The bucket ($BURST, default the rate's worth of 130 µs, at least 2 kB: 16 kB at 1 Gbit/s) is
# kept small on purpose: a bucket refilled during a pass's compute lets the next message
# through at veth speed, which no wire does. bench/link-fidelity.sh measured it: a 58 kB
# message 0.8 ms after the last crossed a 1 Gbit/s tbf at ~750-880 MB/s with a 256 or 64 kB
# bucket and at 113-127 MB/s with 16 kB, which still carries 106-113 MB/s sustained.
A=obna$$; W=obnb$$
D=$(mktemp -d)
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $W 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
ip netns add $A; ip netns add $W
ip link add ${A}v type veth peer name ${W}v
ip link set ${A}v netns $A; ip link set ${W}v netns $W
ip -n $A addr add 10.232.9.1/24 dev ${A}v; ip -n $W addr add 10.232.9.2/24 dev ${W}v
ip -n $A link set ${A}v up; ip -n $W link set ${W}v up
ip -n $A link set lo up; ip -n $W link set lo up
# The token bucket for a tbf rate such as 1gbit or 100mbit: $BURST, or 130 µs of the rate.
bucket() {
  [ -z "${BURST:-}" ] || { echo "$BURST"; return; }
  local bits; case $1 in
    *gbit) bits=$(( ${1%gbit} * 1000000000 ));; *mbit) bits=$(( ${1%mbit} * 1000000 ));;
    *kbit) bits=$(( ${1%kbit} * 1000 ));; *) echo "mesh-netns.sh: rate $1: want Ngbit, Nmbit or Nkbit" >&2; exit 2;;
  esac
  local b=$(( bits / 8 * 130 / 1000000 )); echo $(( b < 2048 ? 2048 : b ))
}
# Shapes both ends of the link at a tbf rate, or removes the shaping ("none").
shape() {
  for ns in $A $W; do
    tc -n $ns qdisc del dev ${ns}v root 2>/dev/null || true
    [ "$1" = none ] || tc -n $ns qdisc add dev ${ns}v root tbf rate $1 burst "$(bucket "$1")" latency 50ms
  done
}
shape "${1:-none}"
# The key needs onebit ($B); a script timing the link alone leaves B unset.
[ -z "${B:-}" ] || $B mesh new-key -o "$D/mesh.key" >/dev/null
printf 'key_file = "mesh.key"\nhead = "10.232.9.1:7661"\nworkers = ["10.232.9.2:7662"]\n' > "$D/mesh.toml"
