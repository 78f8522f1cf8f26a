//! The fleet's pure parts: what a node publishes, what it accepts from the
//! engine, and what it does with it.

use std::path::Path;

use super::*;
use crate::bans::{Policy, Seen};
use crate::daemon::sources::Event;

const NOW: i64 = 1_764_800_000;

fn config(extra: &str) -> Config {
    let yaml = format!(
        "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
bans: {{ grace: 0s, allow: {{ networks: [198.51.100.0/24] }} }}
{extra}"
    );
    crate::config::parse(&yaml, Path::new("t.yaml")).unwrap()
}

fn decoy_node() -> (Config, Node) {
    let c = config("fleet: { url: \"redis://h\", node: mx1, mta_nodes: [mx2] }\n");
    let node = Node::new(&c, c.fleet.as_ref().unwrap(), Arc::default());
    (c, node)
}

fn name(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn message(node: &str, seq: u64, body: Body) -> Item {
    Item::Message(Message {
        node: name(node),
        seq,
        body,
    })
}

fn apply(node: &mut Node, engine: &mut Engine, items: Vec<Item>) -> (Vec<Decision>, FleetStep) {
    let mut decisions = Vec::new();
    let mut deliveries = Vec::new();
    let mut step = FleetStep::default();
    let inbound = Inbound::Batch {
        items,
        cursor: "e 1-0".into(),
        applied: vec![("mx2".into(), 3)],
    };
    node.apply(
        engine,
        inbound,
        NOW,
        &mut decisions,
        &mut deliveries,
        &mut step,
    );
    (decisions, step)
}

#[test]
fn a_decoy_node_bans_only_once_the_mta_node_has_published_past_the_judgement() {
    let (c, mut node) = decoy_node();
    let mut engine = Engine::new(Policy::from_config(&c));
    let mut out = Vec::new();
    let bot: IpAddr = "203.0.113.9".parse().unwrap();
    for t in [NOW - 3, NOW - 2, NOW - 1] {
        engine.hit_seen(bot, t, Seen::Nothing, &mut out);
    }
    node.gate(&mut engine, NOW);
    engine.advance(NOW, &mut out);
    assert!(out.is_empty(), "no word from mx2 yet: {out:?}");
    // The judgement is due when the third hit made it (grace 0): mx2's
    // watermark short of it holds it back, one at it lets it through.
    for (watermark, held) in [(NOW - 2, 1), (NOW - 1, 0)] {
        let (decisions, _) = apply(
            &mut node,
            &mut engine,
            vec![Item::Watermark(name("mx2"), watermark)],
        );
        assert!(decisions.is_empty());
        node.gate(&mut engine, NOW);
        engine.advance(NOW, &mut out);
        assert_eq!(engine.held_back(), held);
    }
    assert_eq!(
        out.iter().map(|d| (d.action, d.ip)).collect::<Vec<_>>(),
        [(Action::Ban, bot)]
    );
    // ... and it is published.
    let mut step = FleetStep::default();
    node.decided(&out, &mut step);
    assert_eq!(step.write.outbox.len(), 1);
    assert!(
        step.write.outbox[0]
            .1
            .contains("\"target\":\"203.0.113.9/32\"")
    );
}

#[test]
fn a_delivery_from_another_node_clears_its_sender_before_the_gate_opens() {
    let (c, mut node) = decoy_node();
    let mut engine = Engine::new(Policy::from_config(&c));
    let mut out = Vec::new();
    let sender: IpAddr = "203.0.113.20".parse().unwrap();
    for t in [NOW - 3, NOW - 2, NOW - 1] {
        engine.hit_seen(sender, t, Seen::Nothing, &mut out);
    }
    let delivery = message(
        "mx2",
        4,
        Body::Delivery {
            ip: "203.0.113.21".parse().unwrap(),
            at: NOW - 1,
        },
    );
    let (_, step) = apply(
        &mut node,
        &mut engine,
        vec![delivery, Item::Watermark(name("mx2"), NOW)],
    );
    assert_eq!(step.write.cursor.as_deref(), Some("e 1-0"));
    assert_eq!(step.write.applied, [("mx2".to_owned(), 3)]);
    node.gate(&mut engine, NOW);
    engine.advance(NOW + 3600, &mut out);
    assert!(out.iter().all(|d| d.action != Action::Ban), "{out:?}");
}

#[test]
fn other_nodes_bans_are_taken_over_unless_a_local_list_covers_them() {
    let (c, mut node) = decoy_node();
    let mut engine = Engine::new(Policy::from_config(&c));
    let ban = |target: &str, source| Body::Ban {
        target: target.parse().unwrap(),
        until: NOW + 600,
        hits: 5,
        offence: 1,
        source,
    };
    let (decisions, step) = apply(
        &mut node,
        &mut engine,
        vec![
            message("mx3", 1, ban("203.0.113.9/32", BanSource::Engine)),
            message("mx3", 2, ban("198.51.100.7/32", BanSource::Engine)),
            message("mx3", 3, ban("192.0.2.0/24", BanSource::Manual)),
            message("mx3", 4, ban("203.0.113.0/24", BanSource::Manual)),
            message("mx3", 5, ban("203.0.113.50/32", BanSource::Engine)),
        ],
    );
    assert!(decisions.is_empty());
    // The engine ban of a host is the engine's now; the allowed network's
    // and the planned MX's are refused; the manual network ban is stored.
    let adopted: Vec<IpAddr> = step.adopted.iter().map(|d| d.ip).collect();
    assert_eq!(
        adopted,
        [
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "203.0.113.50".parse().unwrap()
        ]
    );
    assert!(engine.is_banned("203.0.113.9".parse().unwrap()));
    assert!(!engine.is_banned("198.51.100.7".parse().unwrap()));
    assert_eq!(stored(&step), ["203.0.113.0/24"]);
    assert_eq!(step.write.bans[0].source, Source::Manual);
    // An operator's unban on another node lifts it here too.
    let (_, step) = apply(
        &mut node,
        &mut engine,
        vec![message(
            "mx3",
            6,
            Body::Unban {
                target: "203.0.113.9/32".parse().unwrap(),
            },
        )],
    );
    assert!(!engine.is_banned("203.0.113.9".parse().unwrap()));
    assert_eq!(step.write.unbans.len(), 1);
}

#[test]
fn own_evidence_goes_to_the_outbox_and_the_watermark_waits_for_every_log() {
    let c = config(
        "mta: { logs: [/a, /b] }\nfleet: { url: \"redis://h\", node: mx2, mta_nodes: [mx2] }\n",
    );
    let mut node = Node::new(&c, c.fleet.as_ref().unwrap(), Arc::default());
    let log = |path: &str, read_to| Evidence {
        origin: Origin::Log {
            path: path.into(),
            checkpoint: None,
            read_to: Some(read_to),
        },
        events: vec![Event {
            at: NOW - 5,
            ip: "203.0.113.21".parse().unwrap(),
            kind: Kind::Delivery,
            seen: Seen::Nothing,
        }],
    };
    let mut step = FleetStep::default();
    // A health check from loopback is not published: no node would take it.
    let mut probe = log("/a", NOW - 10);
    probe.events[0].ip = "127.0.0.1".parse().unwrap();
    node.local(&probe, NOW, &mut step);
    assert!(step.write.outbox.is_empty());
    node.local(&log("/a", NOW - 1), NOW, &mut step);
    assert_eq!(step.watermark, None, "/b has not been read yet");
    assert_eq!(step.write.outbox[0].0, "delivery");
    node.local(&log("/b", NOW - 2), NOW, &mut step);
    assert_eq!(step.watermark, Some(NOW - 2), "the slower log");
}

#[test]
fn the_checker_skips_hostile_repeated_and_own_entries() {
    let me = name("mx1");
    let mut checker = Checker::default();
    let mut applied = HashMap::new();
    let entry = |payload: &str| ReceivedBody::Message(payload.as_bytes().to_vec());
    let hit = |node: &str, seq: u64| {
        format!(
            r#"{{"v":1,"node":"{node}","seq":{seq},"kind":"hit","ip":"192.0.2.77","at":{NOW}}}"#
        )
    };
    let mut take = |body| checker.entry(body, &me, NOW, &mut applied);
    assert!(matches!(
        take(entry(&hit("mx2", 1))),
        Some(Item::Message(_))
    ));
    assert!(take(entry(&hit("mx2", 1))).is_none(), "a repeat");
    assert!(take(entry(&hit("mx1", 9))).is_none(), "our own");
    assert!(take(entry("{\"v\":1")).is_none());
    assert!(take(entry(&"x".repeat(100_000))).is_none());
    assert!(take(ReceivedBody::Unknown).is_none());
    assert!(
        take(ReceivedBody::Watermark {
            node: "mx2".into(),
            at: "soon".into()
        })
        .is_none()
    );
    assert!(matches!(
        take(ReceivedBody::Watermark {
            node: "mx2".into(),
            at: (NOW + 999).to_string()
        }),
        Some(Item::Watermark(_, at)) if at == NOW
    ));
    assert_eq!(applied.get("mx2"), Some(&1));
    // The compacted state is checked the same way.
    assert!(
        checker
            .state(StateEntry::Ban("0.0.0.0/0".into(), NOW + 60), NOW)
            .is_none()
    );
    assert!(
        checker
            .state(StateEntry::Ban("192.0.2.1".into(), NOW - 1), NOW)
            .is_none()
    );
    assert!(
        checker
            .state(StateEntry::ManualBan("192.0.2.0/24".into(), NOW + 60), NOW)
            .is_some()
    );
    assert!(
        checker
            .state(StateEntry::Delivery("junk".into(), NOW), NOW)
            .is_none()
    );
    assert!(
        checker
            .state(StateEntry::Watermark("MX 2".into(), NOW), NOW)
            .is_none()
    );
}

#[test]
fn cursors_belong_to_their_epoch_and_outbox_rows_carry_their_compaction() {
    let stored = stored_cursor("e1", &Cursor("17-3".into()));
    assert_eq!(cursor_of(Some(&stored), "e1"), Some(Cursor("17-3".into())));
    assert_eq!(cursor_of(Some(&stored), "e2"), None);
    assert_eq!(cursor_of(None, "e1"), None);
    assert_eq!(
        id_millis(&Cursor("1764800000123-4".into())),
        Some(1_764_800_000_123)
    );
    let me = name("mx2");
    let body = event::encode_body(&Body::Delivery {
        ip: "203.0.113.21".parse().unwrap(),
        at: NOW,
    });
    let out = outgoing(&me, 12, &body, NOW, 24, 64).unwrap();
    assert_eq!(out.seq, 12);
    assert!(
        out.payload
            .starts_with(r#"{"v":1,"node":"mx2","seq":12,"kind":"delivery""#)
    );
    assert_eq!(
        out.compact,
        Compact::Delivery {
            network: "203.0.113.0/24".parse().unwrap(),
            at: NOW
        }
    );
    assert!(outgoing(&me, 13, "{\"kind\":\"launch\"}", NOW, 24, 64).is_none());
}

/// What a step of the engine task does with `inbound`: its decisions and
/// its fleet part.
fn take(node: &mut Node, engine: &mut Engine, inbound: Inbound) -> (Vec<Decision>, FleetStep) {
    let mut decisions = Vec::new();
    let mut step = FleetStep::default();
    node.apply(
        engine,
        inbound,
        NOW,
        &mut decisions,
        &mut Vec::new(),
        &mut step,
    );
    // As the engine task does after every step.
    node.decided(&decisions, &mut step);
    (decisions, step)
}

/// A bootstrap's IPv4 engine bans are the engine's as each part is read,
/// go to enforcement ahead of the store (never one a local list refuses),
/// and to the writer in address order once the state is read, without
/// those the engine changed meanwhile, which enforcement rechecks; the
/// rest is applied as messages are.
#[test]
fn a_bootstrap_hands_its_bans_to_enforcement_as_read_and_to_the_store_in_order() {
    let (c, node) = decoy_node();
    let (tx, ahead) = std::sync::mpsc::sync_channel(8);
    let mut node = node.with_ahead(tx);
    let mut engine = Engine::new(Policy::from_config(&c));
    let mut checker = Checker::default();
    let mut part = |entries: Vec<StateEntry>| {
        let items = entries
            .into_iter()
            .filter_map(|e| checker.state(e, NOW))
            .collect();
        Inbound::State(items)
    };
    let ban = |t: &str, secs| StateEntry::Ban(t.into(), NOW + secs);
    let (decisions, step) = take(
        &mut node,
        &mut engine,
        part(vec![
            ban("203.0.113.9/32", 60),
            ban("198.51.100.7/32", 60),
            ban("2001:db8::1/128", 60),
            ban("10.0.0.1/32", 70),
            ban("9.255.255.255/32", 80),
            ban("100.64.0.0/24", 60),
            StateEntry::ManualBan("192.0.2.200/32".into(), NOW + 60),
        ]),
    );
    assert!(decisions.is_empty());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let v4 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    let (bootstrap, hosts) = ahead_bans(&ahead);
    assert_eq!(bootstrap, 1);
    assert_eq!(
        hosts,
        [
            (ip("203.0.113.9"), NOW + 60),
            (ip("10.0.0.1"), NOW + 70),
            (ip("9.255.255.255"), NOW + 80)
        ],
        "not the allowed network's, nor what is not an IPv4 engine ban"
    );
    assert!(engine.is_banned(ip("203.0.113.9")));
    assert!(!engine.is_banned(ip("198.51.100.7")));
    // The rest, as messages: an IPv6 host's engine ban adopted, the
    // network and the manual ban stored.
    let adopted: Vec<IpAddr> = step.adopted.iter().map(|d| d.ip).collect();
    assert_eq!(adopted, [ip("2001:db8::1")]);
    assert_eq!(stored(&step), ["100.64.0.0/24", "192.0.2.200/32"]);
    assert!(step.adopt.is_none(), "nothing for the writer until the end");
    assert_eq!(
        node.adopting(),
        [
            (v4("9.255.255.255"), NOW + 80),
            (v4("10.0.0.1"), NOW + 70),
            (v4("203.0.113.9"), NOW + 60)
        ],
        "not stored yet, in address order"
    );

    // A delivery from 203.0.113.0/24 later in the state lifts its ban.
    let (decisions, _) = take(
        &mut node,
        &mut engine,
        part(vec![
            ban("203.0.113.77/32", 90),
            ban("10.0.0.1/32", 70),
            StateEntry::Delivery("203.0.113.0/24".into(), NOW - 5),
        ]),
    );
    assert_eq!(
        ahead_bans(&ahead),
        (1, vec![(ip("203.0.113.77"), NOW + 90)]),
        "10.0.0.1 is banned already"
    );
    let lifted: Vec<IpAddr> = decisions.iter().map(|d| d.ip).collect();
    assert_eq!(lifted, [ip("203.0.113.9"), ip("203.0.113.77")]);

    let (_, step) = take(&mut node, &mut engine, Inbound::StateEnd);
    let adopt = step.adopt.expect("the bans for the writer");
    assert_eq!(adopt.bootstrap, 1);
    assert_eq!(
        *adopt.bans,
        [(v4("9.255.255.255"), NOW + 80), (v4("10.0.0.1"), NOW + 70)]
    );
    assert_eq!(adopt.recheck, [ip("203.0.113.9"), ip("203.0.113.77")]);
    assert!(node.adopting().is_empty());
    assert!(ahead.try_recv().is_err());

    // The next bootstrap has a number of its own.
    take(&mut node, &mut engine, part(vec![ban("10.9.9.9/32", 60)]));
    assert_eq!(ahead_bans(&ahead).0, 2);
}

/// The targets of the bans a step has for the writer to store as they are.
fn stored(step: &FleetStep) -> Vec<String> {
    step.write
        .bans
        .iter()
        .map(|b| b.target.to_string())
        .collect()
}

/// The next bans ahead of the store: the bootstrap's number and the hosts.
fn ahead_bans(ahead: &std::sync::mpsc::Receiver<Ahead>) -> (u64, Vec<(IpAddr, i64)>) {
    match ahead.try_recv() {
        Ok(Ahead::Bans { bootstrap, hosts }) => (bootstrap, hosts),
        other => panic!("bans ahead of the store, not {other:?}"),
    }
}
