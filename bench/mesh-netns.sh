# Sourced by the bench/mesh-*.sh scripts that need a link between two machines on one: two
# network namespaces $A (the head, 10.232.9.1:7661) and $W (the worker, 10.232.9.2:7662)
# joined by a veth pair, shaped with `tc tbf` at $1 on both ends unless $1 is "none" (bucket
# $BURST, default 256kb); a key and a mesh file in $D. Deletes the namespaces and $D on exit.
# Needs root.
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
# Shapes both ends of the link at a tbf rate, or removes the shaping ("none").
shape() {
  for ns in $A $W; do
    tc -n $ns qdisc del dev ${ns}v root 2>/dev/null || true
    [ "$1" = none ] || tc -n $ns qdisc add dev ${ns}v root tbf rate $1 burst "${BURST:-256kb}" latency 50ms
  done
}
shape "${1:-none}"
$B mesh new-key -o "$D/mesh.key" >/dev/null
printf 'key_file = "mesh.key"\nhead = "10.232.9.1:7661"\nworkers = ["10.232.9.2:7662"]\n' > "$D/mesh.toml"
