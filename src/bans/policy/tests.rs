//! Policy scenarios, in log time.

use std::net::IpAddr;

use super::*;

const T0: i64 = 1_795_867_201;
const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn policy() -> Policy {
    Policy {
        maxretry: 3,
        findtime: HOUR,
        grace: 10 * MIN,
        bantime: DAY,
        factor: 2,
        max_bantime: 7 * DAY,
        remember: 30 * DAY,
        v4_prefix: 24,
        v6_prefix: 64,
        exempt: vec![
            "127.0.0.0/8".parse().unwrap(),
            "192.0.2.10/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ],
        retry: Some((MIN, DAY)),
    }
}

/// Evidence in log time, as `replay` feeds it: the engine's clock moves
/// to each piece of evidence before it is taken.
trait LogTime {
    fn hit_at(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>);
    fn delivery_at(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>);
}

impl LogTime for Engine {
    fn hit_at(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>) {
        self.advance(at, out);
        self.hit(ip, at);
    }

    fn delivery_at(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>) {
        self.advance(at, out);
        self.delivery(ip, at, out);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Feeds (time, ip, is_delivery) events, then advances to `end`.
fn run(events: &[(i64, &str, bool)], end: i64) -> Vec<Decision> {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    for &(at, who, delivery) in events {
        if delivery {
            engine.delivery_at(ip(who), at, &mut out);
        } else {
            engine.hit_at(ip(who), at, &mut out);
        }
    }
    engine.advance(end, &mut out);
    out
}

fn bans(d: &[Decision]) -> Vec<(IpAddr, i64)> {
    d.iter()
        .filter(|d| d.action == Action::Ban)
        .map(|d| (d.ip, d.at))
        .collect()
}

#[test]
fn a_bot_is_banned_after_maxretry_and_grace() {
    let d = run(
        &[
            (T0, "203.0.113.9", false),
            (T0 + 60, "203.0.113.9", false),
            (T0 + 120, "203.0.113.9", false),
        ],
        T0 + HOUR,
    );
    assert_eq!(bans(&d), [(ip("203.0.113.9"), T0 + 10 * MIN)]);
    let ban = &d[0];
    assert_eq!(
        (ban.hits, ban.first_hit, ban.last_hit, ban.offence),
        (3, Some(T0), Some(T0 + 120), 1)
    );
    assert_eq!(ban.until, Some(T0 + 10 * MIN + DAY));
    assert!(
        ban.reason.contains("no delivery from 203.0.113.0/24"),
        "{}",
        ban.reason
    );
}

#[test]
fn not_before_grace_and_not_below_maxretry() {
    let three = [
        (T0, "203.0.113.9", false),
        (T0 + 1, "203.0.113.9", false),
        (T0 + 2, "203.0.113.9", false),
    ];
    assert!(bans(&run(&three, T0 + 10 * MIN - 1)).is_empty());
    assert!(bans(&run(&three[..2], T0 + DAY)).is_empty());
    // Hits spread wider than findtime never add up.
    let spread = [
        (T0, "203.0.113.9", false),
        (T0 + HOUR, "203.0.113.9", false),
        (T0 + 2 * HOUR + 1, "203.0.113.9", false),
    ];
    assert!(bans(&run(&spread, T0 + DAY)).is_empty());
}

#[test]
fn a_real_sender_that_delivers_within_grace_is_never_banned() {
    let d = run(
        &[
            (T0, "198.51.100.7", false),
            (T0 + 1, "198.51.100.7", false),
            (T0 + 2, "198.51.100.7", false),
            (T0 + 30, "198.51.100.7", true),
        ],
        T0 + DAY,
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn a_big_sender_retrying_from_its_network_is_never_banned() {
    // Hits from .7, delivery from .8 in the same /24 (Gmail-style retry from another IP).
    let d = run(
        &[
            (T0, "198.51.100.7", false),
            (T0 + 5, "198.51.100.7", false),
            (T0 + 9, "198.51.100.7", false),
            (T0 + 300, "198.51.100.8", true),
        ],
        T0 + DAY,
    );
    assert!(d.is_empty(), "{d:?}");
    // IPv6: same /64.
    let d = run(
        &[
            (T0, "2001:db8:1:2::a", false),
            (T0 + 5, "2001:db8:1:2::a", false),
            (T0 + 9, "2001:db8:1:2::a", false),
            (T0 + 60, "2001:db8:1:2:ffff::1", true),
        ],
        T0 + DAY,
    );
    assert!(d.is_empty(), "{d:?}");
    // A delivery from a different /24 does not help.
    let d = run(
        &[
            (T0, "198.51.100.7", false),
            (T0 + 5, "198.51.100.7", false),
            (T0 + 9, "198.51.100.7", false),
            (T0 + 60, "198.51.101.8", true),
        ],
        T0 + DAY,
    );
    assert_eq!(bans(&d).len(), 1);
}

#[test]
fn a_delivery_remembered_from_before_clears_later_hits() {
    let d = run(
        &[
            (T0, "198.51.100.8", true),
            (T0 + 20 * DAY, "198.51.100.7", false),
            (T0 + 20 * DAY + 1, "198.51.100.7", false),
            (T0 + 20 * DAY + 2, "198.51.100.7", false),
        ],
        T0 + 21 * DAY,
    );
    assert!(bans(&d).is_empty(), "{d:?}");
    // ...but not once `remember` has passed.
    let d = run(
        &[
            (T0, "198.51.100.8", true),
            (T0 + 40 * DAY, "198.51.100.7", false),
            (T0 + 40 * DAY + 1, "198.51.100.7", false),
            (T0 + 40 * DAY + 2, "198.51.100.7", false),
        ],
        T0 + 41 * DAY,
    );
    assert_eq!(bans(&d).len(), 1);
}

#[test]
fn exempt_addresses_are_never_banned() {
    for who in ["127.0.0.1", "192.0.2.10", "10.1.2.3", "::ffff:127.0.0.1"] {
        let d = run(
            &[
                (T0, who, false),
                (T0 + 1, who, false),
                (T0 + 2, who, false),
                (T0 + 3, who, false),
            ],
            T0 + DAY,
        );
        assert!(d.is_empty(), "{who}: {d:?}");
    }
}

#[test]
fn from_config_exempts_loopback_and_planned_mx_addresses() {
    let cfg = crate::config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sandwich.yaml"
    )))
    .unwrap();
    let p = Policy::from_config(&cfg);
    for who in [
        "127.0.0.1",
        "::1",
        "192.0.2.10",
        "2001:db8::20",
        "192.0.2.11",
    ] {
        assert!(p.is_exempt(ip(who)), "{who}");
    }
    assert!(!p.is_exempt(ip("203.0.113.9")));
}

#[test]
fn delivery_after_a_ban_lifts_it() {
    let d = run(
        &[
            (T0, "203.0.113.9", false),
            (T0 + 1, "203.0.113.9", false),
            (T0 + 2, "203.0.113.9", false),
            (T0 + HOUR, "203.0.113.77", true),
        ],
        T0 + 2 * HOUR,
    );
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].action, d[1].action), (Action::Ban, Action::Unban));
    assert_eq!(d[1].at, T0 + HOUR);
    assert!(d[1].reason.contains("delivered"), "{}", d[1].reason);
}

#[test]
fn bans_expire_and_repeat_offenders_escalate() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    let bot = ip("203.0.113.9");
    let mut t = T0;
    let mut lengths = Vec::new();
    for _ in 0..5 {
        for k in 0..3 {
            engine.hit_at(bot, t + k, &mut out);
        }
        engine.advance(t + HOUR, &mut out);
        let ban = out
            .iter()
            .rev()
            .find(|d| d.action == Action::Ban)
            .unwrap()
            .clone();
        lengths.push(ban.until.unwrap() - ban.at);
        t = ban.until.unwrap() + 1;
        engine.advance(t, &mut out);
        assert_eq!(out.last().unwrap().action, Action::Unban);
        assert_eq!(out.last().unwrap().reason, "ban expired");
    }
    assert_eq!(lengths, [DAY, 2 * DAY, 4 * DAY, 7 * DAY, 7 * DAY]);
}

#[test]
fn hits_while_banned_are_ignored_and_memory_is_pruned() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    for i in 0..10_000u32 {
        let who = IpAddr::from([203, 0, (i >> 8) as u8, i as u8]);
        engine.hit_at(who, T0 + i64::from(i % 100), &mut out);
    }
    assert_eq!(engine.sizes().clients, 10_000);
    engine.advance(T0 + 3 * HOUR, &mut out);
    assert_eq!(
        engine.sizes().clients,
        0,
        "one-hit clients are forgotten after findtime"
    );
    assert!(out.is_empty());
}

#[test]
fn out_of_order_time_does_not_go_backwards() {
    let d = run(
        &[
            (T0 + 100, "203.0.113.9", false),
            (T0, "203.0.113.9", false),
            (T0 + 50, "203.0.113.9", false),
        ],
        T0 + HOUR,
    );
    assert_eq!(bans(&d).len(), 1);
}

#[test]
fn restored_bans_expire_and_lift_and_restored_deliveries_clear() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    engine.restore_ban(ip("203.0.113.9"), T0 + HOUR, 5, 1);
    engine.restore_ban(ip("203.0.113.10"), T0 + DAY, 5, 1);
    engine.restore_delivery("198.51.100.0/24".parse().unwrap(), T0);
    engine.delivery_at(ip("203.0.113.77"), T0 + 60, &mut out);
    assert_eq!(out.len(), 2, "both bans in 203.0.113.0/24 lifted: {out:?}");
    for k in 0..3 {
        engine.hit_at(ip("198.51.100.9"), T0 + 100 + k, &mut out);
    }
    engine.advance(T0 + 2 * HOUR, &mut out);
    assert_eq!(
        out.len(),
        2,
        "the restored delivery clears the network: {out:?}"
    );
}

#[test]
fn a_ban_forgotten_by_hand_is_judged_afresh() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    let bot = ip("203.0.113.9");
    for k in 0..3 {
        engine.hit_at(bot, T0 + k, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert_eq!(out.len(), 1);
    assert!(engine.forget_ban(bot));
    assert!(!engine.forget_ban(bot));
    assert_eq!(engine.banned().count(), 0);
    for k in 0..3 {
        engine.hit_at(bot, T0 + HOUR + k, &mut out);
    }
    engine.advance(T0 + 2 * HOUR, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1].offence, 2,
        "the earlier ban still counts for escalation"
    );
}

#[test]
fn allowed_networks_are_never_banned() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    let big = ip("198.51.100.33");
    engine.hit_at(big, T0, &mut out);
    engine.set_allowed(vec!["198.51.100.0/24".parse().unwrap()]);
    for k in 1..5 {
        engine.hit_at(big, T0 + k, &mut out);
    }
    engine.advance(T0 + DAY, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_reloaded_policy_applies_to_what_comes_next() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    // Two hits under maxretry 3: nothing yet.
    engine.hit_at(ip("198.51.100.7"), T0, &mut out);
    engine.hit_at(ip("198.51.100.7"), T0 + MIN, &mut out);
    // A banned bot that the new config exempts.
    for i in 0..3 {
        engine.hit_at(ip("203.0.113.9"), T0 + i * MIN, &mut out);
    }
    engine.advance(T0 + 20 * MIN, &mut out);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 10 * MIN)]);
    out.clear();
    let mut stricter = policy();
    stricter.maxretry = 2;
    stricter.exempt.push("203.0.113.0/24".parse().unwrap());
    assert_eq!(engine.set_policy(stricter, T0 + 21 * MIN, &mut out), 0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].action, out[0].ip),
        (Action::Unban, ip("203.0.113.9"))
    );
    assert_eq!(out[0].reason, "exempt by the reloaded config");
    out.clear();
    // maxretry 2 now: the next hit is judged with the latest one before it.
    engine.hit_at(ip("198.51.100.7"), T0 + 22 * MIN, &mut out);
    engine.advance(T0 + 40 * MIN, &mut out);
    assert_eq!(bans(&out), [(ip("198.51.100.7"), T0 + 22 * MIN)]);
    // The exempt address is never banned again.
    out.clear();
    for i in 0..5 {
        engine.hit_at(ip("203.0.113.9"), T0 + HOUR + i * MIN, &mut out);
    }
    engine.advance(T0 + 2 * HOUR, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn reloaded_network_sizes_keep_remembered_deliveries() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    engine.delivery_at(ip("198.51.100.7"), T0, &mut out);
    engine.delivery_at(ip("2001:db8:1:2::7"), T0, &mut out);
    let mut narrower = policy();
    narrower.v4_prefix = 26;
    narrower.v6_prefix = 96;
    // The /24 covers four /26s; a /64 would be 2^32 /96s: forgotten.
    assert_eq!(engine.set_policy(narrower, T0, &mut out), 1);
    assert_eq!(engine.sizes().delivering_networks, 4);
    // A bot in another /26 of the delivering /24 is still cleared.
    for i in 0..3 {
        engine.hit_at(ip("198.51.100.200"), T0 + i * MIN, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
    let mut wider = policy();
    wider.v4_prefix = 16;
    assert_eq!(engine.set_policy(wider, T0 + HOUR, &mut out), 0);
    assert_eq!(engine.sizes().delivering_networks, 1);
}

#[test]
fn deliveries_restored_at_another_network_size_still_clear_their_network() {
    let mut narrower = policy();
    narrower.v4_prefix = 26;
    let mut engine = Engine::new(narrower);
    let mut out = Vec::new();
    // Stored as a /24 by a run with the default size.
    engine.restore_delivery("198.51.100.0/24".parse().unwrap(), T0);
    for i in 0..3 {
        engine.hit_at(ip("198.51.100.200"), T0 + i * MIN, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
}

#[test]
fn an_escalated_ban_longer_than_remember_still_escalates_the_next() {
    // remember (1 day) is shorter than the ban (3 days): the count is kept
    // for `remember` after the ban ends, not after it starts.
    let mut engine = Engine::new(Policy {
        bantime: 3 * DAY,
        max_bantime: 30 * DAY,
        remember: DAY,
        ..policy()
    });
    let mut out = Vec::new();
    let bot = ip("203.0.113.9");
    for k in 0..3 {
        engine.hit_at(bot, T0 + k, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert_eq!((out[0].action, out[0].offence), (Action::Ban, 1));
    let ends = out[0].until.unwrap();
    assert_eq!(ends, T0 + 600 + 3 * DAY);
    engine.advance(ends + HOUR, &mut out);
    assert_eq!(out[1].action, Action::Unban);
    let back = ends + 12 * HOUR;
    for k in 0..3 {
        engine.hit_at(bot, back + k, &mut out);
    }
    engine.advance(back + HOUR, &mut out);
    assert_eq!((out[2].action, out[2].offence), (Action::Ban, 2), "{out:?}");
    assert_eq!(out[2].until.unwrap() - out[2].at, 6 * DAY);
    // `remember` after that ban's end, the count is gone.
    let later = out[2].until.unwrap() + DAY + HOUR;
    engine.advance(later, &mut out);
    for k in 0..3 {
        engine.hit_at(bot, later + k, &mut out);
    }
    engine.advance(later + HOUR, &mut out);
    assert_eq!(out.last().unwrap().offence, 1, "{out:?}");
}

#[test]
fn restored_offences_keep_the_larger_count() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    let bot = ip("203.0.113.9");
    engine.restore_offence(bot, 3, T0 - HOUR);
    engine.restore_offence(bot, 2, T0 - 2 * HOUR);
    for k in 0..3 {
        engine.hit_at(bot, T0 + k, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert_eq!(out[0].offence, 4);
    assert_eq!(out[0].until.unwrap() - out[0].at, 7 * DAY, "capped at max");
}

#[test]
fn pending_counts_only_the_bans_to_come() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    // maxretry hits spread wider than findtime: never a ban, not pending.
    for k in 0..3 {
        engine.hit_at(
            ip("203.0.113.10"),
            T0 - 2 * HOUR + k * (HOUR / 2 + 1),
            &mut out,
        );
    }
    // maxretry hits within findtime, grace not over: pending.
    for k in 0..3 {
        engine.hit_at(ip("203.0.113.9"), T0 + k, &mut out);
    }
    assert_eq!(engine.pending(), 1);
    engine.advance(T0 + HOUR + 20 * MIN, &mut out);
    assert_eq!(engine.pending(), 0);
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn a_bot_that_never_pauses_is_banned_when_grace_runs_out() {
    // A hit every 10 s for an hour: grace counts from the first of the
    // maxretry hits that qualified, and later hits do not postpone it.
    let events: Vec<(i64, &str, bool)> = (0..360)
        .map(|k| (T0 + 10 * k, "203.0.113.9", false))
        .collect();
    let d = run(&events, T0 + HOUR);
    assert_eq!(bans(&d), [(ip("203.0.113.9"), T0 + 10 * MIN)]);
    assert_eq!((d[0].first_hit, d[0].last_hit), (Some(T0), Some(T0 + 590)));
    assert_eq!(d[0].hits, 60, "every hit until the judgement counts");
}

#[test]
fn a_flood_during_grace_keeps_one_judgement_per_client() {
    // Hostile input must not grow the engine by the hit: 100,000 hits in
    // a second each from two clients leave one scheduled judgement each.
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    for k in 0..100_000 {
        engine.hit_at(ip("203.0.113.9"), T0 + k / 100_000, &mut out);
        engine.hit_at(ip("203.0.113.10"), T0 + 1, &mut out);
    }
    assert_eq!(engine.due.len(), 2);
    assert_eq!(engine.pending(), 2);
    engine.advance(T0 + 11 * MIN, &mut out);
    assert_eq!(bans(&out).len(), 2, "{out:?}");
    assert_eq!(engine.due.len(), 0, "judged: nothing left to schedule");
    assert_eq!(engine.bans.len(), 2, "the two bans hold their own expiries");
}

/// An engine in which 203.0.113.9 has just earned a judgement (3 hits).
fn pending_bot() -> (Engine, Vec<Decision>) {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    for k in 0..3 {
        engine.hit_at(ip("203.0.113.9"), T0 + k, &mut out);
    }
    (engine, out)
}

#[test]
fn a_reload_that_raises_maxretry_drops_judgements_no_longer_earned() {
    let (mut engine, mut out) = pending_bot();
    assert_eq!(engine.pending(), 1);
    let stricter = Policy {
        maxretry: 5,
        ..policy()
    };
    engine.set_policy(stricter, T0 + 3, &mut out);
    assert_eq!(engine.pending(), 0);
    engine.advance(T0 + HOUR, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
    // Two more make five, but the five span more than findtime; three more
    // earn the judgement, and grace counts from the first of the five.
    engine.hit_at(ip("203.0.113.9"), T0 + HOUR + 1, &mut out);
    engine.hit_at(ip("203.0.113.9"), T0 + HOUR + 2, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
    for k in 3..6 {
        engine.hit_at(ip("203.0.113.9"), T0 + HOUR + k, &mut out);
    }
    engine.advance(T0 + 2 * HOUR, &mut out);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + HOUR + 1 + 10 * MIN)]);
}

#[test]
fn a_client_banned_during_its_grace_is_not_banned_twice() {
    let (mut engine, mut out) = pending_bot();
    // A manual ban arrives from the store before the grace runs out.
    engine.restore_ban(ip("203.0.113.9"), T0 + DAY, 0, 0);
    engine.advance(T0 + HOUR, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
    assert_eq!(engine.pending(), 0);
}

/// In `run` the engine's time is the wall clock, handed to `advance`. A
/// host clock stepped back an hour expires nothing early and still bans a
/// new bot at once (at the engine's time); stepped forward, bans due by the
/// new time end.
#[test]
fn a_host_clock_step_moves_no_ban_backwards() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    let (a, b) = (ip("203.0.113.9"), ip("198.51.100.66"));
    for k in 0..3 {
        engine.advance(T0 + k, &mut out);
        engine.hit(a, T0 + k);
    }
    engine.advance(T0 + 10 * MIN, &mut out);
    assert_eq!(bans(&out), [(a, T0 + 10 * MIN)]);
    out.clear();
    // The clock steps back an hour; evidence is dated by the new clock.
    let back = T0 + 10 * MIN - HOUR;
    for k in 0..3 {
        let wall = back + k;
        engine.advance(wall, &mut out);
        engine.hit(b, crate::clock::evidence_time(wall, wall).at);
    }
    engine.advance(back + 20 * MIN, &mut out);
    assert_eq!(
        bans(&out),
        [(b, T0 + 10 * MIN)],
        "judged at once, at the engine's time"
    );
    assert!(out.iter().all(|d| d.action == Action::Ban), "{out:?}");
    out.clear();
    // Stepped forward past both bans' end: both end.
    engine.advance(T0 + 2 * DAY, &mut out);
    let ended: Vec<IpAddr> = out
        .iter()
        .filter(|d| d.action == Action::Unban)
        .map(|d| d.ip)
        .collect();
    assert_eq!(ended.len(), 2, "{out:?}");
}

/// Regression: a huge `bantime` or an escalation product that overflows
/// gave bans ending in the year 219250468; no ban outlasts nolist's
/// maximum, so every ban's end prints as a valid RFC 3339 time.
#[test]
fn no_ban_outlasts_the_ten_year_maximum() {
    let max = crate::config::value::MAX_BAN.as_secs() as i64;
    let huge = Policy {
        bantime: i64::MAX / 3,
        factor: u32::MAX,
        max_bantime: i64::MAX,
        ..policy()
    };
    assert_eq!([huge.ban_length(1), huge.ban_length(40)], [max, max]);
    let mut engine = Engine::new(huge);
    let mut out = Vec::new();
    for k in 0..3 {
        engine.hit_at(ip("203.0.113.9"), T0 + k, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    let until = out[0].until.expect("a ban");
    assert_eq!(until, out[0].at + max);
    let printed = crate::watch::time::rfc3339(until);
    assert!(
        printed.starts_with("20") && printed.len() == 20,
        "{printed}"
    );
}

// Retry recognition.

fn envelope(from: &str, to: &str) -> Seen {
    Seen::Envelope(crate::bans::Envelope::of(from.as_bytes(), to.as_bytes()))
}

/// Feeds `(time, ip, seen)` hits in log time, then advances to `end`.
fn run_seen(policy: Policy, hits: &[(i64, &str, Seen)], end: i64) -> (Engine, Vec<Decision>) {
    let mut engine = Engine::new(policy);
    let mut out = Vec::new();
    for &(at, who, seen) in hits {
        engine.advance(at, &mut out);
        engine.hit_seen(ip(who), at, seen, &mut out);
    }
    engine.advance(end, &mut out);
    (engine, out)
}

fn actions(d: &[Decision]) -> Vec<(Action, IpAddr, i64)> {
    d.iter().map(|d| (d.action, d.ip, d.at)).collect()
}

#[test]
fn an_opensmtpd_retry_is_exempt_and_never_banned() {
    // OpenSMTPD after a 450 at RCPT: the same envelope again after 400 s,
    // then backing off. maxretry 3 within findtime 1h would ban it.
    let e = envelope("news@sender.example", "u@example.org");
    let hits = [
        (T0, "203.0.113.9", e),
        (T0 + 400, "203.0.113.9", e),
        (T0 + 1600, "203.0.113.9", e),
        (T0 + 4000, "203.0.113.9", e),
    ];
    let (engine, out) = run_seen(policy(), &hits, T0 + 2 * DAY);
    assert_eq!(
        actions(&out),
        [(Action::RetryExempt, ip("203.0.113.9"), T0 + 400)],
        "{out:?}"
    );
    let d = &out[0];
    assert_eq!(d.network, Some("203.0.113.0/24".parse().unwrap()));
    assert_eq!(d.until, Some(T0 + 400 + 30 * DAY));
    assert_eq!((d.first_hit, d.last_hit), (Some(T0), Some(T0 + 400)));
    assert!(d.reason.contains("after 400s"), "{}", d.reason);
    assert_eq!(
        engine.retry_exempt().collect::<Vec<_>>(),
        [("203.0.113.0/24".parse().unwrap(), T0 + 400 + 30 * DAY)]
    );
    // maxretry 1: the first hit alone earns a judgement at T0 + grace, and
    // the retry before it clears the client.
    let (_, out) = run_seen(
        Policy {
            maxretry: 1,
            ..policy()
        },
        &hits,
        T0 + 2 * DAY,
    );
    assert!(bans(&out).is_empty(), "{out:?}");
    // Without retry recognition, the same sender is banned.
    let (_, out) = run_seen(
        Policy {
            retry: None,
            ..policy()
        },
        &hits,
        T0 + 2 * DAY,
    );
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 1600)]);
}

#[test]
fn a_bot_resending_fast_is_banned_never_exempt() {
    // The same envelope every 10 s for an hour: never a gap of min_delay.
    let e = envelope("a@b.example", "u@example.org");
    let hits: Vec<_> = (0..360).map(|k| (T0 + 10 * k, "203.0.113.9", e)).collect();
    let (_, out) = run_seen(policy(), &hits, T0 + 2 * HOUR);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 600)], "{out:?}");
    assert!(
        out.iter().all(|d| d.action != Action::RetryExempt),
        "{out:?}"
    );
}

#[test]
fn different_envelopes_from_one_network_are_no_retry() {
    let hits = [
        (T0, "203.0.113.9", envelope("a@b.example", "u1@example.org")),
        (
            T0 + 400,
            "203.0.113.9",
            envelope("a@b.example", "u2@example.org"),
        ),
        (
            T0 + 800,
            "203.0.113.10",
            envelope("c@b.example", "u1@example.org"),
        ),
        (
            T0 + 1600,
            "203.0.113.9",
            envelope("a@b.example", "u3@example.org"),
        ),
    ];
    let (_, out) = run_seen(policy(), &hits, T0 + DAY);
    assert!(
        out.iter().all(|d| d.action != Action::RetryExempt),
        "{out:?}"
    );
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 1600)]);
    // The same envelope from another network is no retry either.
    let e = envelope("a@b.example", "u@example.org");
    let (_, out) = run_seen(
        policy(),
        &[(T0, "203.0.113.9", e), (T0 + 400, "198.51.100.9", e)],
        T0 + DAY,
    );
    assert!(
        out.iter().all(|d| d.action != Action::RetryExempt),
        "{out:?}"
    );
}

#[test]
fn a_retry_after_max_delay_does_not_count() {
    let e = envelope("a@b.example", "u@example.org");
    let hits = [(T0, "203.0.113.9", e), (T0 + DAY + 1, "203.0.113.9", e)];
    let (_, out) = run_seen(policy(), &hits, T0 + 2 * DAY);
    assert!(
        out.iter().all(|d| d.action != Action::RetryExempt),
        "{out:?}"
    );
    // Exactly max_delay still counts.
    let hits = [(T0, "203.0.113.9", e), (T0 + DAY, "203.0.113.9", e)];
    let (_, out) = run_seen(policy(), &hits, T0 + 2 * DAY);
    assert_eq!(out[0].action, Action::RetryExempt, "{out:?}");
}

#[test]
fn the_fingerprint_table_is_bounded() {
    use crate::bans::retry::MAX_FINGERPRINTS;
    let mut engine = Engine::new(Policy {
        maxretry: 1_000,
        ..policy()
    });
    let mut out = Vec::new();
    let first = Seen::Envelope(crate::bans::Envelope(0));
    engine.advance(T0, &mut out);
    engine.hit_seen(ip("203.0.113.9"), T0, first, &mut out);
    // A million random envelopes (xorshift, fixed seed) from one network.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..1_000_000i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seen = Seen::Envelope(crate::bans::Envelope(x));
        engine.hit_seen(ip("203.0.113.9"), T0 + k / 100_000, seen, &mut out);
    }
    let sizes = engine.sizes();
    assert_eq!(sizes.fingerprints, MAX_FINGERPRINTS);
    assert_eq!(
        sizes.fingerprints_dropped,
        1_000_001 - MAX_FINGERPRINTS as u64
    );
    assert!(out.is_empty(), "{out:?}");
    // A fingerprint recorded before the table filled still works...
    engine.advance(T0 + 400, &mut out);
    engine.hit_seen(ip("203.0.113.9"), T0 + 400, first, &mut out);
    assert_eq!(
        actions(&out),
        [(Action::RetryExempt, ip("203.0.113.9"), T0 + 400)]
    );
    // ... and the table empties max_delay after the last sighting.
    engine.advance(T0 + 400 + DAY + HOUR, &mut out);
    assert_eq!(engine.sizes().fingerprints, 0);
}

#[test]
fn in_greet_modes_the_network_coming_back_is_a_retry() {
    // Another address of the same /24, two minutes later.
    let hits = [
        (T0, "203.0.113.9", Seen::Network),
        (T0 + 120, "203.0.113.77", Seen::Network),
    ];
    let (_, out) = run_seen(policy(), &hits, T0 + DAY);
    assert_eq!(
        actions(&out),
        [(Action::RetryExempt, ip("203.0.113.77"), T0 + 120)]
    );
    assert!(out[0].reason.contains("came back"), "{}", out[0].reason);
    // Back within min_delay: no retry, and a burst is banned.
    let hits: Vec<_> = (0..5)
        .map(|k| (T0 + 10 * k, "203.0.113.9", Seen::Network))
        .collect();
    let (_, out) = run_seen(policy(), &hits, T0 + DAY);
    assert_eq!(actions(&out)[0], (Action::Ban, ip("203.0.113.9"), T0 + 600));
    // Firewall counts (refuse mode) reveal nothing: never a retry.
    let hits = [
        (T0, "203.0.113.9", Seen::Nothing),
        (T0 + 120, "203.0.113.9", Seen::Nothing),
        (T0 + 240, "203.0.113.9", Seen::Nothing),
    ];
    let (_, out) = run_seen(policy(), &hits, T0 + DAY);
    assert_eq!(actions(&out), [(Action::Ban, ip("203.0.113.9"), T0 + 600)]);
}

#[test]
fn a_retry_lifts_the_bans_of_its_network_and_exempts_it() {
    let e = envelope("a@b.example", "u@example.org");
    let mut engine = Engine::new(Policy {
        maxretry: 1,
        grace: MIN,
        ..policy()
    });
    let mut out = Vec::new();
    engine.advance(T0, &mut out);
    engine.hit_seen(ip("203.0.113.9"), T0, e, &mut out);
    engine.advance(T0 + MIN, &mut out);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + MIN)]);
    // The banned client retries (no firewall held it back).
    engine.advance(T0 + 400, &mut out);
    engine.hit_seen(ip("203.0.113.9"), T0 + 400, e, &mut out);
    assert_eq!(
        actions(&out[1..]),
        [
            (Action::RetryExempt, ip("203.0.113.9"), T0 + 400),
            (Action::Unban, ip("203.0.113.9"), T0 + 400)
        ]
    );
    assert!(out[2].reason.contains("retried"), "{}", out[2].reason);
    // Hits from the exempt network are not counted; a second retry makes
    // no second decision.
    out.clear();
    for k in 0..10 {
        engine.advance(T0 + 500 + k * 100, &mut out);
        engine.hit_seen(ip("203.0.113.20"), T0 + 500 + k * 100, e, &mut out);
    }
    engine.advance(T0 + DAY, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(engine.sizes().clients, 0);
    // The exemption ends after `remember`.
    engine.advance(T0 + 400 + 30 * DAY + HOUR, &mut out);
    assert_eq!(engine.sizes().retry_exempt_networks, 0);
    engine.hit_seen(
        ip("203.0.113.20"),
        T0 + 400 + 30 * DAY + HOUR,
        Seen::Nothing,
        &mut out,
    );
    engine.advance(T0 + 400 + 30 * DAY + 2 * HOUR, &mut out);
    assert_eq!(bans(&out).len(), 1, "{out:?}");
}

#[test]
fn a_restored_retry_exempts_its_network() {
    let mut engine = Engine::new(Policy {
        maxretry: 1,
        ..policy()
    });
    engine.restore_retry("203.0.113.0/24".parse().unwrap(), T0);
    let mut out = Vec::new();
    engine.advance(T0 + HOUR, &mut out);
    engine.hit(ip("203.0.113.9"), T0 + HOUR);
    engine.advance(T0 + DAY, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        engine.retry_exempt().collect::<Vec<_>>(),
        [("203.0.113.0/24".parse().unwrap(), T0 + 30 * DAY)]
    );
}

#[test]
fn a_judge_limit_holds_back_judgements_until_the_evidence_is_complete() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    // The fleet's MTA evidence is complete up to T0 only.
    engine.set_judge_limit(Some(T0));
    for t in [T0, T0 + 1, T0 + 2] {
        engine.hit_at(ip("203.0.113.9"), t, &mut out);
        engine.hit_at(ip("198.51.100.7"), t, &mut out);
    }
    engine.advance(T0 + HOUR, &mut out);
    assert!(bans(&out).is_empty(), "{out:?}");
    assert_eq!(engine.held_back(), 2);
    // A delivery dated before the judgement arrives late (a lagging MTA
    // node): it still clears its sender, which is judged only now.
    engine.delivery(ip("198.51.100.20"), T0 + 5 * MIN, &mut out);
    engine.set_judge_limit(Some(T0 + 10 * MIN));
    engine.advance(T0 + HOUR, &mut out);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 10 * MIN)]);
    assert_eq!(engine.held_back(), 0);
    // Expiries are never held back.
    engine.set_judge_limit(Some(T0));
    engine.advance(T0 + 10 * MIN + DAY, &mut out);
    assert_eq!(out.last().map(|d| d.action), Some(Action::Unban));
}

#[test]
fn without_a_limit_nothing_is_held() {
    let mut engine = Engine::new(policy());
    let mut out = Vec::new();
    engine.set_judge_limit(None);
    for t in [T0, T0 + 1, T0 + 2] {
        engine.hit_at(ip("203.0.113.9"), t, &mut out);
    }
    engine.advance(T0 + 10 * MIN, &mut out);
    assert_eq!(bans(&out), [(ip("203.0.113.9"), T0 + 10 * MIN)]);
    assert_eq!(engine.held_back(), 0);
}

#[test]
fn protects_names_every_overlap_with_an_exempt_or_allowed_network() {
    let mut engine = Engine::new(policy());
    engine.set_allowed(vec!["198.51.100.0/24".parse().unwrap()]);
    for (target, protected) in [
        ("10.1.2.3/32", true),       // inside 10.0.0.0/8
        ("192.0.2.0/24", true),      // contains 192.0.2.10
        ("198.51.100.128/25", true), // inside the SPF allow list
        ("203.0.113.9/32", false),
        ("192.0.3.0/24", false),
    ] {
        assert_eq!(
            engine.protects(&target.parse().unwrap()),
            protected,
            "{target}"
        );
    }
}

#[test]
fn escalation_survives_lifts_expiries_and_restores_in_any_order() {
    // The offence count lives with the ban while it is in force and is
    // remembered from its end afterwards, however the ban went.
    let mut engine = Engine::new(policy());
    let bot = ip("203.0.113.9");
    engine.restore_offence(bot, 4, T0 - HOUR);
    engine.restore_ban(bot, T0 + HOUR, 3, 2);
    assert_eq!(engine.offence(bot), 4, "the larger count wins");
    engine.restore_offence(bot, 6, T0 - DAY);
    assert_eq!(engine.offence(bot), 6);
    assert!(engine.forget_ban(bot));
    assert_eq!(engine.offences.get(&bot), Some(&(6, T0 + HOUR)));
    assert_eq!(engine.sizes().offenders, 1);
    let mut out = Vec::new();
    for k in 0..3 {
        engine.hit_at(bot, T0 + k, &mut out);
    }
    engine.advance(T0 + 11 * MIN, &mut out);
    assert_eq!(out[0].offence, 7, "{out:?}");
    assert!(engine.offences.is_empty(), "held by the ban while in force");
    assert_eq!(engine.sizes().offenders, 1);
}

#[test]
fn a_delivery_lifts_exactly_the_bans_in_its_network() {
    let mut engine = Engine::new(policy());
    for (a, until) in [
        ("198.51.100.1", T0 + HOUR),
        ("198.51.100.200", T0 + DAY),
        ("198.51.101.1", T0 + HOUR),
        ("2001:db8::9", T0 + HOUR),
        ("2001:db8:1::9", T0 + HOUR),
    ] {
        engine.restore_ban(ip(a), until, 5, 1);
    }
    let mut out = Vec::new();
    engine.delivery(ip("198.51.100.77"), T0, &mut out);
    engine.delivery(ip("2001:db8::1"), T0, &mut out);
    let lifted: Vec<IpAddr> = out.iter().map(|d| d.ip).collect();
    assert_eq!(
        lifted,
        [ip("198.51.100.1"), ip("198.51.100.200"), ip("2001:db8::9")]
    );
    let mut left: Vec<IpAddr> = engine.banned().collect();
    left.sort();
    assert_eq!(left, [ip("198.51.101.1"), ip("2001:db8:1::9")]);
    // The lifted bans' ends are gone too: only the two left expire.
    engine.advance(T0 + 2 * DAY, &mut out);
    assert_eq!(out.len(), 5, "{out:?}");
    assert!(out[3..].iter().all(|d| d.reason == "ban expired"));
}
