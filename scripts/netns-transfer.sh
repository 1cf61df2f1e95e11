#!/usr/bin/env bash
# Sends a file from a watch to a phone in two network namespaces joined by a veth pair,
# through a tbf bandwidth limit, with a black hole (every packet dropped, both ways) in
# the middle of the transfer, and reports the transfer time against the link's capacity.
# Needs root, iproute2 (ip netns, tc) and nftables (`apt-get install nftables`): the
# black hole is an nftables drop policy in both namespaces. Cleans up after itself.
#
#   scripts/netns-transfer.sh [MiB=32] [rate-mbit=80] [blackhole-seconds=20] [blackhole-at-seconds=1]
#
# A black hole longer than the link timeout (15 s by default) makes both ends drop the
# link; the watch redials through the hole and, once packets flow, resumes the file on a
# new link.
set -euo pipefail
MIB=${1:-32}
RATE=${2:-80}
HOLE=${3:-20}
AT=${4:-1}
cd "$(dirname "$0")/.."
cargo build -q --release -p interconnect-cli
BIN=$PWD/target/release/interconnect
WORK=$(mktemp -d)
P=icnet-phone-$$
W=icnet-watch-$$
cleanup() {
    kill "${PHONE_PID:-}" 2>/dev/null || true
    ip netns del "$P" 2>/dev/null || true
    ip netns del "$W" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$P"
ip netns add "$W"
ip link add icp$$ type veth peer name icw$$
ip link set icp$$ netns "$P"
ip link set icw$$ netns "$W"
ip -n "$P" addr add 10.77.0.1/24 dev icp$$
ip -n "$W" addr add 10.77.0.2/24 dev icw$$
for ns in "$P" "$W"; do ip -n "$ns" link set lo up; done
ip -n "$P" link set icp$$ up
ip -n "$W" link set icw$$ up
tc -n "$P" qdisc add dev icp$$ root tbf rate "${RATE}mbit" burst 64kb latency 100ms
tc -n "$W" qdisc add dev icw$$ root tbf rate "${RATE}mbit" burst 64kb latency 100ms

head -c $((MIB << 20)) /dev/urandom > "$WORK/file.bin"
INTERCONNECT_HOME="$WORK/phone-home" ip netns exec "$P" "$BIN" phone --listen 10.77.0.1:7000 \
    --package com.example.netns --app-version 1 --files-dir "$WORK/received" \
    > "$WORK/phone.out" 2> "$WORK/phone.err" &
PHONE_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/phone.out" 2>/dev/null && break; sleep 0.1; done

start=$(date +%s.%N)
INTERCONNECT_HOME="$WORK/watch-home" ip netns exec "$W" "$BIN" watch --connect 10.77.0.1:7000 \
    --package com.example.netns send-file "$WORK/file.bin" --timeout-ms 600000 \
    > "$WORK/watch.out" 2> "$WORK/watch.err" &
WATCH_PID=$!
sleep "$AT"
for ns in "$P" "$W"; do
    ip netns exec "$ns" nft -f - <<NFT
table inet hole {
    chain input { type filter hook input priority 0; policy drop; iif lo accept; }
    chain output { type filter hook output priority 0; policy drop; oif lo accept; }
}
NFT
done
echo "black hole for ${HOLE} s from ${AT} s"
sleep "$HOLE"
for ns in "$P" "$W"; do ip netns exec "$ns" nft delete table inet hole; done
status=0
wait "$WATCH_PID" || status=$?
end=$(date +%s.%N)
cat "$WORK/watch.out"
if [ "$status" -ne 0 ]; then echo "the watch failed ($status)"; tail -5 "$WORK/watch.err"; exit 1; fi
if ! cmp -s "$WORK/file.bin" "$WORK/received/file.bin"; then echo "the stored file differs"; exit 1; fi
links=$(grep -c '"event":"open"' "$WORK/phone.out" || true)
python3 - "$start" "$end" "$MIB" "$RATE" "$HOLE" "$links" <<'PY'
import sys
start, end, mib, rate, hole, links = map(float, sys.argv[1:])
took = end - start
ideal = mib * 1024 * 1024 * 8 / (rate * 1e6)
print(f"{mib:.0f} MiB over {rate:.0f} Mbit/s with a {hole:.0f} s black hole: {took:.1f} s "
      f"(capacity alone {ideal:.1f} s; {took - hole:.1f} s outside the hole = "
      f"{ideal / (took - hole):.2f} of capacity); channel opened {links:.0f} times; file identical")
PY
