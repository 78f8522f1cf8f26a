//! The daemon in-process: evidence in through [`Running::evidence`] or a
//! real log file, bans out through a recording sink, restarts, reloads and
//! shutdown. Nothing sleeps: every wait is for a change the daemon makes,
//! bounded by a timeout.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::bans::{Action, Decision, Seen};
use crate::clock::unix_now;
use crate::config::Config;
use crate::enforce::{Cache, Change, EnforceError, Enforcer, Report};
use crate::plan::Plan;
use crate::store::Store;
use crate::watch::Kind;

/// How long a test waits for the daemon to act.
const PATIENCE: Duration = Duration::from_secs(20);

/// A sink that holds its bans in memory and publishes them on every change.
struct Recorder {
    held: BTreeSet<IpNet>,
    published: watch::Sender<BTreeSet<IpNet>>,
    /// How long a change takes to apply (a large firewall's); a slow one
    /// also knows what it holds (like nftables' cache), so only a change of
    /// the bans makes a reconcile due.
    slow: Duration,
}

impl Recorder {
    fn new() -> (Recorder, watch::Receiver<BTreeSet<IpNet>>) {
        let (published, seen) = watch::channel(BTreeSet::new());
        let recorder = Recorder {
            held: BTreeSet::new(),
            published,
            slow: Duration::ZERO,
        };
        (recorder, seen)
    }
}

impl Enforcer for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn check(&mut self) -> Result<(), EnforceError> {
        Ok(())
    }

    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        Ok(Some(self.held.iter().copied().collect()))
    }

    fn cache(&mut self) -> Option<&mut dyn Cache> {
        (!self.slow.is_zero()).then_some(self as &mut dyn Cache)
    }

    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        std::thread::sleep(self.slow);
        for net in &change.remove {
            self.held.remove(net);
        }
        self.held.extend(change.add.iter().map(|(net, _)| *net));
        self.published.send_replace(self.held.clone());
        Ok(Report::of(change))
    }
}

impl Cache for Recorder {
    fn forget(&mut self) {}

    fn changed_outside(&mut self) -> bool {
        false
    }

    fn holds(&self, nets: &[IpNet]) -> Option<Vec<IpNet>> {
        Some(
            nets.iter()
                .filter(|n| self.held.contains(n))
                .copied()
                .collect(),
        )
    }
}

/// Refuse mode (nothing to bind), no firewall: the recorder is the sink.
fn config(state: &Path, maxretry: u32, extra: &str) -> Config {
    config_with(state, maxretry, "{ mode: refuse }", extra)
}

fn config_with(state: &Path, maxretry: u32, responder: &str, extra: &str) -> Config {
    let yaml = format!(
        "state_dir: {}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
responder: {responder}
bans: {{ maxretry: {maxretry}, grace: 0s, bantime: 1d, enforce: {{ backend: none }} }}
{extra}",
        state.display()
    );
    crate::config::parse(&yaml, Path::new("t.yaml")).unwrap()
}

fn fast() -> Timing {
    Timing {
        enforce: Duration::from_millis(50),
        poll: Duration::from_millis(50),
    }
}

async fn start(config: Config) -> (Running, watch::Receiver<BTreeSet<IpNet>>) {
    let (recorder, seen) = Recorder::new();
    let plan = Plan::build(&config);
    let running = Daemon::new(config)
        .sink(Box::new(recorder))
        .timing(fast())
        .start(&plan, CancellationToken::new())
        .await
        .unwrap();
    (running, seen)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn host(text: &str) -> IpNet {
    IpNet::from(ip(text))
}

/// `n` decoy hits from `from`, as the responder would report them.
async fn hits(running: &Running, from: &str, n: usize) {
    let now = unix_now();
    let event = Event {
        at: now,
        ip: ip(from),
        kind: Kind::DecoyHit,
        seen: Seen::Nothing,
    };
    let evidence = Evidence {
        origin: Origin::Responder,
        events: vec![event; n],
    };
    running.evidence().send(evidence).await.unwrap();
}

/// Waits until the sink holds what `ok` accepts.
async fn sink_holds(
    seen: &mut watch::Receiver<BTreeSet<IpNet>>,
    ok: impl FnMut(&BTreeSet<IpNet>) -> bool,
) -> BTreeSet<IpNet> {
    tokio::time::timeout(PATIENCE, seen.wait_for(ok))
        .await
        .expect("the sink did not get there in time")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_becomes_a_ban_in_the_store_and_the_sink_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (running, mut seen) = start(config(&state, 3, "")).await;
    hits(&running, "203.0.113.9", 2).await;
    hits(&running, "198.51.100.7", 3).await;
    let held = sink_holds(&mut seen, |s| s.contains(&host("198.51.100.7"))).await;
    // Evidence is taken in order: the two hits came first and made no ban.
    assert_eq!(held, BTreeSet::from([host("198.51.100.7")]));
    assert_eq!(running.shutdown().await.dropped_events, 0);
    let store = Store::open_read_only(&state).unwrap();
    let bans: Vec<IpNet> = store
        .bans(unix_now())
        .unwrap()
        .iter()
        .map(|b| b.target)
        .collect();
    assert_eq!(bans, [host("198.51.100.7")]);

    // After a restart the engine knows its ban, and the sink gets it
    // without any new evidence.
    let (running, mut seen) = start(config(&state, 3, "")).await;
    sink_holds(&mut seen, |s| s.contains(&host("198.51.100.7"))).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_new_policy_to_the_evidence_that_follows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut running, mut seen) = start(config(&state, 3, "")).await;
    hits(&running, "203.0.113.1", 2).await;
    hits(&running, "203.0.113.99", 3).await;
    let held = sink_holds(&mut seen, |s| s.contains(&host("203.0.113.99"))).await;
    assert!(!held.contains(&host("203.0.113.1")), "2 hits of 3: no ban");

    let stricter = config(&state, 2, "");
    let plan = Plan::build(&stricter);
    running.reload(stricter, &plan).await.unwrap();
    hits(&running, "203.0.113.2", 2).await;
    sink_holds(&mut seen, |s| s.contains(&host("203.0.113.2"))).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut running, mut seen) = start(config(&state, 3, "")).await;
    // A listening responder on an address this host does not have.
    let bad = config_with(
        &state,
        2,
        "{ mode: rcpt-450, listen: ['192.0.2.254:2525'] }",
        "",
    );
    let plan = Plan::build(&bad);
    let err = running.reload(bad, &plan).await.unwrap_err();
    assert!(matches!(err, DaemonError::Bind(_)), "{err}");
    // Still maxretry 3: two hits ban nobody, three do.
    hits(&running, "203.0.113.3", 2).await;
    hits(&running, "203.0.113.4", 3).await;
    let held = sink_holds(&mut seen, |s| s.contains(&host("203.0.113.4"))).await;
    assert!(!held.contains(&host("203.0.113.3")));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_bans_and_shutdown_keeps_the_checkpoint_with_the_ban() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("mail.log");
    let line = |ip: &str| {
        format!(
            "{} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
            crate::watch::time::rfc3339(unix_now())
        )
    };
    std::fs::write(&log, line("192.0.2.77").repeat(3)).unwrap();
    let mta = format!("mta: {{ format: postfix, logs: [{}] }}\n", log.display());
    let (running, mut seen) = start(config(&state, 3, &mta)).await;
    sink_holds(&mut seen, |s| s.contains(&host("192.0.2.77"))).await;
    running.shutdown().await;
    let store = Store::open_read_only(&state).unwrap();
    let checkpoint = store.checkpoint(&log.display().to_string()).unwrap();
    assert!(checkpoint.is_some(), "the tailer's checkpoint was written");
}

/// A restart after a ban expired keeps the client's offence count: its next
/// ban escalates.
#[test]
fn a_restart_after_the_ban_expired_keeps_the_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("state"), 3, "");
    let now = unix_now();
    let bot: IpAddr = "203.0.113.9".parse().unwrap();
    {
        let (mut store, _) = restore(&config).unwrap();
        store
            .apply(&[Decision {
                action: Action::Ban,
                ip: bot,
                at: now - 3 * 86_400,
                until: Some(now - 2 * 86_400),
                reason: "earlier".into(),
                hits: 3,
                first_hit: None,
                last_hit: None,
                offence: 1,
                network: None,
            }])
            .unwrap();
        assert_eq!(store.expire(now).unwrap(), 1, "the ban is over and purged");
    }
    let (_, mut engine) = restore(&config).unwrap();
    let mut out = Vec::new();
    for k in 0..3 {
        engine.advance(now + k, &mut out);
        engine.hit(bot, now + k);
    }
    engine.advance(now + 10, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].action, out[0].offence), (Action::Ban, 2));
    assert_eq!(out[0].until.unwrap() - out[0].at, 2 * 86_400);
}

/// A daemon with `recorder` as its sink whose enforcement ticks once an
/// hour: only the writer's nudge (or a rest, see
/// `a_ban_decided_during_a_slow_reconcile…`) can make a ban quick. Returns
/// once the start's reconcile has passed (a ban in it would pass a test
/// more easily).
async fn start_hourly(state: &Path, recorder: Recorder) -> Running {
    let config = config(state, 3, "");
    let plan = Plan::build(&config);
    let running = Daemon::new(config)
        .sink(Box::new(recorder))
        .timing(Timing {
            enforce: Duration::from_secs(3600),
            poll: Duration::from_millis(50),
        })
        .start(&plan, CancellationToken::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ban_reaches_the_sink_at_once_not_at_the_next_enforcement_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (recorder, mut seen) = Recorder::new();
    let running = start_hourly(&dir.path().join("state"), recorder).await;
    hits(&running, "198.51.100.7", 3).await;
    sink_holds(&mut seen, |s| s.contains(&host("198.51.100.7"))).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_decided_during_a_slow_reconcile_follows_once_enforcement_has_rested() {
    // A reconcile that takes long (millions of bans) is not repeated back
    // to back; the change it missed follows once it has rested as long,
    // not at the next tick.
    let dir = tempfile::tempdir().unwrap();
    let (mut recorder, mut seen) = Recorder::new();
    recorder.slow = Duration::from_millis(500);
    let running = start_hourly(&dir.path().join("state"), recorder).await;
    hits(&running, "198.51.100.7", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Decided while the first ban is being applied.
    hits(&running, "198.51.100.8", 3).await;
    let held = sink_holds(&mut seen, |s| s.contains(&host("198.51.100.8"))).await;
    assert!(held.contains(&host("198.51.100.7")), "{held:?}");
    running.shutdown().await;
}
