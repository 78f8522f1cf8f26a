//! The Grafana dashboard `examples/grafana/nolist.json` against a running
//! `nolist run` with every optional part configured (decoy, MTA log, DNS
//! with the DNSBL, a fleet on a private `redis-server`): a well-formed
//! dashboard, every metric a panel asks for exported, and every exported
//! `nolist_*` family on some panel (a new metric needs a panel).

use std::collections::{BTreeSet, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::Value;

use crate::util;
use crate::util::redis::{RedisOptions, RedisServer};
use crate::util::serve::Server;

/// The dashboard, parsed.
fn dashboard() -> Value {
    let path = util::root().join("examples/grafana/nolist.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `nolist_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("nolist_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let len = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len() - at);
        if boundary {
            names.push(rest[at..at + len].to_owned());
        }
        rest = &rest[at + len..];
    }
    names
}

/// Every `expr` of every panel's targets.
fn exprs(dash: &Value) -> Vec<String> {
    panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

fn panels(dash: &Value) -> Vec<Value> {
    dash["panels"].as_array().cloned().unwrap_or_default()
}

/// A panel's grid rectangle: x, y, width, height.
fn rect(panel: &Value) -> [u64; 4] {
    let g = &panel["gridPos"];
    ["x", "y", "w", "h"].map(|k| {
        g[k].as_u64()
            .unwrap_or_else(|| panic!("gridPos.{k} of {}", panel["title"]))
    })
}

#[test]
fn the_dashboard_is_a_valid_grafana_dashboard() {
    let dash = dashboard();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
    let variables = dash["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "DS_PROMETHEUS"),
        "a data source variable"
    );
    let panels = panels(&dash);
    assert!(!panels.is_empty());
    let mut ids = HashSet::new();
    for p in &panels {
        let title = &p["title"];
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("id of {title}"));
        assert!(ids.insert(id), "id {id} twice");
        assert!(
            matches!(p["type"].as_str(), Some("timeseries" | "stat")),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let [x, _, w, h] = rect(p);
        assert!(w > 0 && h > 0 && x + w <= 24, "{title} off the grid");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr:?}");
            assert!(t["refId"].is_string(), "{title}");
        }
    }
    for (i, a) in panels.iter().enumerate() {
        for b in &panels[i + 1..] {
            let ([ax, ay, aw, ah], [bx, by, bw, bh]) = (rect(a), rect(b));
            let apart = ax + aw <= bx || bx + bw <= ax || ay + ah <= by || by + bh <= ay;
            assert!(apart, "{} overlaps {}", a["title"], b["title"]);
        }
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names("sum by (a) (rate(nolist_x_total{i=~\"$i\"}[5m])) / nolist_y"),
        ["nolist_x_total", "nolist_y"]
    );
    assert!(metric_names("rate(my_nolist_z[5m])").is_empty());
}

/// A DNSBL question for 127.0.0.2 (the always-listed test entry).
fn dnsbl_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["2", "0", "0", "127", "bl", "example", "net"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks the DNSBL at `server` once and waits for the answer.
fn ask_dnsbl(server: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&dnsbl_query(), server).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).expect("a DNSBL answer");
    assert!(n > 12 && buf[..2] == [0x12, 0x34], "{:02x?}", &buf[..n]);
}

#[test]
fn every_panel_metric_is_exported_and_every_exported_metric_has_a_panel() {
    let Some(redis) = RedisServer::start(RedisOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(
        &cfg,
        format!(
            "\
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [127.0.0.2] }}
responder: {{ mode: rcpt-450, listen: [\"127.0.0.1:0\"] }}
mta: {{ logs: [\"{log}\"], format: postfix }}
bans:
  enforce: {{ backend: none }}
dns:
  serve: {{ listen: [\"127.0.0.1:0\"] }}
  soa: {{ mname: ns1.example.net, rname: hostmaster@example.org }}
  ns: [ns1.example.net]
  dnsbl: {{ zone: bl.example.net, answer: 127.0.0.5, ttl: 5m }}
fleet:
  url: {url}
  node: mxa
  mta_nodes: [mxa]
metrics:
  listen: \"127.0.0.1:0\"
",
            log = log.display(),
            url = redis.url(),
        ),
    )
    .unwrap();
    let server = Server::start_with("run", &cfg, &[], 4).unwrap_or_else(|l| panic!("{l}"));
    // Bootstrapped: the shared log is read from the cursor the compacted
    // state was taken at, so an entry added before that is never read.
    assert!(
        server.wait_for_log(
            "fleet: bootstrapped from the compacted state",
            Duration::from_secs(10)
        ),
        "{}",
        server.log_text()
    );
    ask_dnsbl(server.addr("udp", false));
    // An entry of the shared log the node must skip: counted by reason.
    redis.command(&["XADD", "{nolist}:events", "*", "p", "not json"]);
    assert!(
        server.wait_for_log(
            "skipped an entry of the shared log",
            Duration::from_secs(20)
        ),
        "{}",
        server.log_text()
    );
    let (_, body) = util::http_get(server.addr("metrics", false), "/metrics");
    let exported: BTreeSet<String> = body
        .lines()
        .filter(|l| l.starts_with("nolist_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let dash = dashboard();
    let used: BTreeSet<String> = exprs(&dash).iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "panels ask for metrics nolist run does not export: {unknown:?}\n{body}"
    );
    let missing: Vec<_> = exported.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "exported metrics on no panel of examples/grafana/nolist.json: {missing:?}"
    );
}
