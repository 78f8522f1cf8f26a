//! End to end in a network namespace the test creates (`unshare -n`): the
//! decoy responder on a test address, port 25; a bot that hits it
//! `maxretry` times ends up in nolist's nftables set and its next
//! connection is dropped; a legitimate sender that hit the decoy but then
//! delivered through the real MX (per the MTA log the daemon follows) is
//! never banned. Nothing here touches the host's network or ruleset.

mod util;

use std::process::Command;

use util::require_tool;

const SCRIPT: &str = r#"
set -u
ip link set lo up
ip addr add 198.18.0.1/32 dev lo   # the decoy
ip addr add 198.18.0.9/32 dev lo   # a bot
ip addr add 198.18.1.7/32 dev lo   # a real sender
cat > "$DIR/nolist.yaml" <<EOF
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [198.18.0.1] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [198.18.0.2] }
responder:
  mode: rcpt-450
  listen: ["198.18.0.1:25"]
mta: { logs: ["$DIR/mail.log"], format: postfix }
bans: { maxretry: 3, findtime: 1h, grace: 4s, bantime: 1h, ignore: [], enforce: { backend: nftables, ports: [25] } }
EOF
: > "$DIR/mail.log"
"$NOLIST" run -c "$DIR/nolist.yaml" --state-dir "$DIR/state" 2> "$DIR/run.log" &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on smtp" "$DIR/run.log" && break; sleep 0.1; done
grep -q "listening on smtp" "$DIR/run.log" || { echo "NOT STARTED"; cat "$DIR/run.log"; kill $pid; exit 1; }

probe() { # source address -> "ok" when a banner arrives, "dropped" on timeout
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.settimeout(2)
try:
    s.connect(("198.18.0.1", 25))
    print("ok" if s.recv(100).startswith(b"220") else "odd")
except socket.timeout:
    print("dropped")
except OSError as e:
    print("error", e)
PY
}

# The real sender: hits the decoy as often as the bot would (say, three
# retries of a queue run), then delivers through the real MX within grace,
# as the real MX's Postfix logs it.
for i in 1 2 3; do
  swaks --server 198.18.0.1:25 --local-interface 198.18.1.7 --to user@example.org \
        --from real@sender.example --quit-after RCPT --timeout 5 > /dev/null 2>&1
done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) mx2 postfix/smtpd[77]: 4F1C2D3E5A: client=mail.sender.example[198.18.1.7]" >> "$DIR/mail.log"

# The bot: three dialogues up to RCPT, each answered 450, and no delivery.
for i in 1 2 3; do
  swaks --server 198.18.0.1:25 --local-interface 198.18.0.9 --to user@example.org \
        --from bot@spam.example --quit-after RCPT --timeout 5 > "$DIR/swaks.$i" 2>&1
  grep -q "<\*\* 450" "$DIR/swaks.$i" && echo "BOT_GOT_450"
done

# Banned within grace plus a tick or two.
for _ in $(seq 1 100); do
  nft -j list set inet nolist banned4 2>/dev/null | grep -q '"198.18.0.9"' && break
  sleep 0.1
done
nft -j list set inet nolist banned4 | grep -q '"198.18.0.9"' && echo "BOT_IN_SET"
echo "BOT_NEXT: $(probe 198.18.0.9)"
echo "REAL_NEXT: $(probe 198.18.1.7)"
nft -j list set inet nolist banned4 | grep -q '"198.18.1.7"' && echo "REAL_IN_SET"

# A wiped ruleset is rebuilt from the store.
nft flush ruleset
for _ in $(seq 1 60); do
  nft -j list set inet nolist banned4 2>/dev/null | grep -q '"198.18.0.9"' && break
  sleep 0.1
done
nft -j list set inet nolist banned4 2>/dev/null | grep -q '"198.18.0.9"' && echo "REBUILT"

kill -TERM $pid
wait $pid
echo "EXIT $?"
"#;

#[test]
fn bot_is_dropped_real_sender_is_not() {
    for (tool, package) in [
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("swaks", "swaks"),
        ("python3", "python3"),
    ] {
        if require_tool(tool, package).is_none() {
            return;
        }
    }
    if !util::require_root("a network namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", SCRIPT])
        .env("DIR", dir.path())
        .env("NOLIST", env!("CARGO_BIN_EXE_nolist"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    let ctx = format!("{text}\n--- nolist run log ---\n{log}");
    assert_eq!(text.matches("BOT_GOT_450").count(), 3, "{ctx}");
    assert!(text.contains("BOT_IN_SET"), "{ctx}");
    assert!(text.contains("BOT_NEXT: dropped"), "{ctx}");
    assert!(text.contains("REAL_NEXT: ok"), "{ctx}");
    assert!(!text.contains("REAL_IN_SET"), "{ctx}");
    assert!(text.contains("REBUILT"), "{ctx}");
    assert!(text.contains("EXIT 0"), "{ctx}");
}
