#!/usr/bin/env bash
# Sends a file from a watch to a phone in two network namespaces joined by a veth pair,
# through a tbf bandwidth limit, with random packet loss and a black hole (every packet
# dropped, both ways) if asked, and reports the time against raw TCP on the same path
# (same file, same limit, same loss and hole) and against the link's capacity.
# Needs root, iproute2 (ip netns, tc), nftables and ethtool (`apt-get install nftables
# ethtool`). Cleans up after itself.
#
#   scripts/netns-transfer.sh [MiB=32] [rate-mbit=80] [hole-s=20] [loss-percent=0]
#
# The hole starts 1 s into each transfer. One longer than the link timeout (15 s by
# default) makes both ends drop the link; the watch redials through the hole and, once
# packets flow, resumes the file on a new link. Loss is applied to packets entering
# either namespace, with offloads off so it hits real packets.
set -euo pipefail
MIB=${1:-32}
RATE=${2:-80}
HOLE=${3:-20}
LOSS=${4:-0}
AT=1
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
for pair in "$P icp$$" "$W icw$$"; do
    set -- $pair
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
    tc -n "$1" qdisc add dev "$2" root tbf rate "${RATE}mbit" burst 64kb latency 100ms
    if [ "$LOSS" != 0 ]; then
        ip netns exec "$1" nft -f - <<NFT
table inet loss {
    chain input { type filter hook input priority 0; iif lo accept; numgen random mod 100 < $LOSS drop; }
}
NFT
    fi
done

# Drops every packet in both namespaces for $HOLE s, $AT s from now (in the background).
black_hole() {
    [ "$HOLE" = 0 ] && return
    (
        sleep "$AT"
        for ns in "$P" "$W"; do
            ip netns exec "$ns" nft -f - <<NFT
table inet hole {
    chain input { type filter hook input priority -10; policy drop; iif lo accept; }
    chain output { type filter hook output priority -10; policy drop; oif lo accept; }
}
NFT
        done
        sleep "$HOLE"
        for ns in "$P" "$W"; do ip netns exec "$ns" nft delete table inet hole; done
    ) &
    HOLE_PID=$!
}

head -c $((MIB << 20)) /dev/urandom > "$WORK/file.bin"

# Raw TCP on the same path: a receiver that counts bytes, a sender that writes the file.
ip netns exec "$P" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.1", 7001)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
print(n, flush=True)' > "$WORK/raw.out" &
RAW_PID=$!
for _ in $(seq 50); do grep -q ready "$WORK/raw.out" 2>/dev/null && break; sleep 0.1; done
raw_start=$(date +%s.%N)
black_hole
ip netns exec "$W" python3 -c '
import socket, sys
s = socket.create_connection(("10.77.0.1", 7001))
with open(sys.argv[1], "rb") as f:
    s.sendfile(f)
s.shutdown(socket.SHUT_WR); s.recv(1)' "$WORK/file.bin"
wait "$RAW_PID"
raw_end=$(date +%s.%N)
[ -n "${HOLE_PID:-}" ] && wait "$HOLE_PID"

INTERCONNECT_HOME="$WORK/phone-home" ip netns exec "$P" "$BIN" phone --listen 10.77.0.1:7000 \
    --package com.example.netns --app-version 1 --files-dir "$WORK/received" \
    > "$WORK/phone.out" 2> "$WORK/phone.err" &
PHONE_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/phone.out" 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N)
black_hole
status=0
INTERCONNECT_HOME="$WORK/watch-home" ip netns exec "$W" "$BIN" watch --connect 10.77.0.1:7000 \
    --package com.example.netns send-file "$WORK/file.bin" --timeout-ms 1800000 \
    > "$WORK/watch.out" 2> "$WORK/watch.err" || status=$?
end=$(date +%s.%N)
[ -n "${HOLE_PID:-}" ] && wait "$HOLE_PID"
cat "$WORK/watch.out"
if [ "$status" -ne 0 ]; then echo "the watch failed ($status)"; tail -5 "$WORK/watch.err"; exit 1; fi
if ! cmp -s "$WORK/file.bin" "$WORK/received/file.bin"; then echo "the stored file differs"; exit 1; fi
links=$(grep -c '"event":"open"' "$WORK/phone.out" || true)
python3 - "$start" "$end" "$raw_start" "$raw_end" "$MIB" "$RATE" "$HOLE" "$LOSS" "$links" <<'PY'
import sys
start, end, raw_start, raw_end, mib, rate, hole, loss, links = map(float, sys.argv[1:])
took, raw = end - start, raw_end - raw_start
ideal = mib * 1024 * 1024 * 8 / (rate * 1e6)
print(f"{mib:.0f} MiB at {rate:g} Mbit/s, {loss:g}% loss, {hole:g} s black hole: "
      f"interconnect {took:.1f} s, raw TCP {raw:.1f} s (raw/interconnect = {raw / took:.2f}); "
      f"capacity alone {ideal:.1f} s; channel opened {links:.0f} times; file identical")
PY
