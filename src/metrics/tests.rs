use super::*;

/// Counts something in every metric nolist has, plus names, label keys,
/// label values and gauge values that need sanitising, escaping or
/// formatting, through the `metrics` facade (as the daemon does).
fn count_everything() {
    describe();
    let c = |name: &'static str, labels: &[(&'static str, &'static str)], n: u64| {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        metrics::counter!(name, labels).increment(n);
    };
    c(SESSIONS, &[("stage", "connect"), ("end", "passed")], 2);
    c(SESSIONS, &[("stage", "rcpt"), ("end", "quit")], 1);
    c(EVENTS_DROPPED, &[], 0);
    c(HITS, &[("source", "responder")], 5);
    c(HITS, &[("source", "log")], 1);
    c(HITS, &[("source", "firewall")], 0);
    c(DELIVERIES, &[], 1);
    c(BANS_ADDED, &[], 4);
    c(BANS_REMOVED, &[], 2);
    c(RETRIES, &[], 1);
    c(RETRY_TABLE_FULL, &[], 0);
    c(LOG_LINES, &[("log", "/var/log/mail.log")], 10);
    c(LOG_LINES, &[("log", "odd \"name\" a\\b c\\\\d\nnext")], 1);
    c(LOG_PARSE_ERRORS, &[("log", "/var/log/mail.log")], 0);
    c(LOG_FUTURE_LINES, &[("log", "/var/log/mail.log")], 0);
    c(FIREWALL_CHANGES, &[("op", "add")], 3);
    c(FIREWALL_CHANGES, &[("op", "remove")], 1);
    c(PASS_CHANGES, &[("op", "add")], 1);
    c(ENFORCEMENT_ERRORS, &[], 0);
    c(DNS_QUERIES, &[("proto", "udp")], 7);
    c(DNS_QUERIES, &[("proto", "tcp")], 2);
    c(RELOADS, &[("result", "ok")], 1);
    c(RELOADS, &[("result", "failed")], 0);
    // Labels keep their given order; names and keys are sanitised.
    c("nolist.test-name", &[("z", "1"), ("bad-key", "2")], 3);
    metrics::counter!("nolist_test_max").absolute(u64::MAX);
    metrics::counter!("nolist_test_max").absolute(5);
    metrics::gauge!(SESSIONS_OPEN).set(3.0);
    let active = metrics::gauge!(BANS_ACTIVE);
    active.increment(2.5);
    active.decrement(1.0);
    metrics::gauge!("nolist_test_gauge", "k" => "neg").set(-0.25);
    metrics::gauge!("nolist_test_gauge", "k" => "big").set(1e21);
}

/// `/metrics` as metrics-exporter-prometheus 0.18 rendered
/// [`count_everything`], in the registry's order (the exporter's was a
/// hash map's: [`canonical`] compared the two).
const EXPECTED: &str = r#"# HELP nolist_bans_added_total Bans decided by the engine.
# TYPE nolist_bans_added_total counter
nolist_bans_added_total 4

# HELP nolist_bans_removed_total Bans lifted by the engine (expired, delivered, exempt after reload).
# TYPE nolist_bans_removed_total counter
nolist_bans_removed_total 2

# HELP nolist_decoy_hits_total Decoy hits given to the ban engine, by source (responder, log, firewall).
# TYPE nolist_decoy_hits_total counter
nolist_decoy_hits_total{source="firewall"} 0
nolist_decoy_hits_total{source="log"} 1
nolist_decoy_hits_total{source="responder"} 5

# HELP nolist_deliveries_total Deliveries through a real MX seen in the MTA logs.
# TYPE nolist_deliveries_total counter
nolist_deliveries_total 1

# HELP nolist_dns_queries_total DNS messages answered, by transport (udp, tcp).
# TYPE nolist_dns_queries_total counter
nolist_dns_queries_total{proto="tcp"} 2
nolist_dns_queries_total{proto="udp"} 7

# HELP nolist_enforcement_errors_total Failed enforcement reconciles and evidence readings.
# TYPE nolist_enforcement_errors_total counter
nolist_enforcement_errors_total 0

# HELP nolist_firewall_changes_total Firewall elements changed by reconciles, by operation (add, remove).
# TYPE nolist_firewall_changes_total counter
nolist_firewall_changes_total{op="add"} 3
nolist_firewall_changes_total{op="remove"} 1

# HELP nolist_log_future_lines_total MTA log lines stamped in the future beyond the allowed skew (counted as now), by log.
# TYPE nolist_log_future_lines_total counter
nolist_log_future_lines_total{log="/var/log/mail.log"} 0

# HELP nolist_log_lines_total Complete MTA log lines read, by log.
# TYPE nolist_log_lines_total counter
nolist_log_lines_total{log="/var/log/mail.log"} 10
nolist_log_lines_total{log="odd \"name\" a\\b c\\d\nnext"} 1

# HELP nolist_log_parse_errors_total MTA log lines without a readable time stamp or over 64 KiB, by log.
# TYPE nolist_log_parse_errors_total counter
nolist_log_parse_errors_total{log="/var/log/mail.log"} 0

# HELP nolist_pass_changes_total Let-through (retry-exempt networks reset at the decoy) elements changed by reconciles, by operation (add, remove).
# TYPE nolist_pass_changes_total counter
nolist_pass_changes_total{op="add"} 1

# HELP nolist_reloads_total SIGHUP reloads, by result (ok, failed).
# TYPE nolist_reloads_total counter
nolist_reloads_total{result="failed"} 0
nolist_reloads_total{result="ok"} 1

# HELP nolist_retries_total Retrying MTAs recognised: networks made exempt from bans and let through.
# TYPE nolist_retries_total counter
nolist_retries_total 1

# HELP nolist_retry_table_full_total New retry fingerprints not recorded because the table was full.
# TYPE nolist_retry_table_full_total counter
nolist_retry_table_full_total 0

# HELP nolist_smtp_events_dropped_total Session events dropped because the ban engine's queue was full.
# TYPE nolist_smtp_events_dropped_total counter
nolist_smtp_events_dropped_total 0

# HELP nolist_smtp_sessions_total Decoy SMTP sessions, by furthest stage reached and how they ended.
# TYPE nolist_smtp_sessions_total counter
nolist_smtp_sessions_total{stage="connect",end="passed"} 2
nolist_smtp_sessions_total{stage="rcpt",end="quit"} 1

# TYPE nolist_test_max counter
nolist_test_max 18446744073709551615

# TYPE nolist_test_name counter
nolist_test_name{z="1",bad_key="2"} 3

# HELP nolist_bans_active Bans in force in the state store (engine and manual).
# TYPE nolist_bans_active gauge
nolist_bans_active 1.5

# HELP nolist_smtp_sessions_open Decoy SMTP sessions open now.
# TYPE nolist_smtp_sessions_open gauge
nolist_smtp_sessions_open 3

# TYPE nolist_test_gauge gauge
nolist_test_gauge{k="big"} 1000000000000000000000
nolist_test_gauge{k="neg"} -0.25

"#;

/// The exposition text with each metric's samples sorted and the metrics
/// sorted: the old exporter's order was a hash map's.
fn canonical(text: &str) -> Vec<Vec<&str>> {
    let mut blocks: Vec<Vec<&str>> = text
        .split_terminator("\n\n")
        .map(|block| {
            let (head, mut samples): (Vec<&str>, Vec<&str>) =
                block.lines().partition(|l| l.starts_with('#'));
            samples.sort_unstable();
            head.into_iter().chain(samples).collect()
        })
        .collect();
    blocks.sort();
    blocks
}

#[test]
fn renders_every_metric_as_the_prometheus_exporter_did() {
    let registry = Registry::default();
    metrics::with_local_recorder(&registry, count_everything);
    let text = registry.render();
    assert_eq!(canonical(&text), canonical(EXPECTED));
    assert_eq!(text, EXPECTED);
}

#[test]
fn clones_share_the_metrics_and_describe_keeps_the_first_help() {
    let registry = Registry::default();
    let installed = registry.clone();
    metrics::with_local_recorder(&installed, || {
        metrics::describe_counter!("nolist_x_total", "first");
        metrics::describe_counter!("nolist_x_total", "second");
        let c = metrics::counter!("nolist_x_total");
        c.increment(1);
        metrics::counter!("nolist_x_total").increment(2);
    });
    assert_eq!(
        registry.render(),
        "# HELP nolist_x_total first\n# TYPE nolist_x_total counter\nnolist_x_total 3\n\n"
    );
    assert_eq!(Registry::default().render(), "");
}
