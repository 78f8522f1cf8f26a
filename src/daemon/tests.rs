use std::path::Path;

use super::*;
use crate::bans::Action;

/// A restart after a ban expired keeps the client's offence count: its next
/// ban escalates.
#[test]
fn a_restart_after_the_ban_expired_keeps_the_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state_dir: {}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
bans: {{ maxretry: 3, grace: 0s, bantime: 1d, enforce: {{ backend: none }} }}
",
        dir.path().join("state").display()
    );
    let config = crate::config::parse(&yaml, Path::new("t.yaml")).unwrap();
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
