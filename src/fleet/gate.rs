//! The fleet's safety rule, pure: a decoy hit becomes a ban only once
//! every MTA node's watermark (the log time up to which it has published
//! every delivery) has passed the hit's judgement time. A delivery that
//! would clear the sender can then no longer be on its way. An MTA node
//! that is silent holds back new bans (fail open: the decoy still
//! temp-fails, so nothing is lost) unless `on_silent_mta: proceed`.

use std::collections::BTreeMap;

use crate::config::{Fleet, NodeName, OnSilentMta};

/// One MTA node's watermark, and when (wall clock) it last moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Log time up to which its deliveries are published.
    pub at: i64,
    /// When it last moved.
    pub moved: i64,
}

/// The MTA nodes' watermarks.
#[derive(Clone, Debug)]
pub struct Gate {
    marks: BTreeMap<NodeName, Option<Mark>>,
    silent_after: i64,
    on_silent: OnSilentMta,
}

impl Gate {
    /// The gate of `fleet`'s MTA nodes, none of them heard from yet;
    /// `now` counts as when each was last heard of (a node that never
    /// reports becomes silent after `silent_after`).
    pub fn new(fleet: &Fleet, now: i64) -> Gate {
        Gate {
            marks: fleet
                .mta_nodes
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        Some(Mark {
                            at: i64::MIN,
                            moved: now,
                        }),
                    )
                })
                .collect(),
            silent_after: i64::try_from(fleet.silent_after.as_secs()).unwrap_or(i64::MAX),
            on_silent: fleet.on_silent_mta,
        }
    }

    /// `node` has published everything up to `at`, seen at `now`. Only a
    /// watermark that moves forward counts; a node not in `mta_nodes` is
    /// ignored. Returns whether the node had been silent.
    pub fn mark(&mut self, node: &NodeName, at: i64, now: i64) -> bool {
        let silent = self.is_silent(node, now);
        let Some(Some(mark)) = self.marks.get_mut(node) else {
            return false;
        };
        if at > mark.at {
            *mark = Mark { at, moved: now };
            return silent;
        }
        false
    }

    /// Whether `node`'s watermark has not moved for `silent_after`.
    pub fn is_silent(&self, node: &NodeName, now: i64) -> bool {
        self.marks
            .get(node)
            .and_then(|m| *m)
            .is_some_and(|m| now.saturating_sub(m.moved) > self.silent_after)
    }

    /// The MTA nodes whose watermark has not moved for `silent_after`.
    pub fn silent(&self, now: i64) -> Vec<NodeName> {
        self.marks
            .keys()
            .filter(|n| self.is_silent(n, now))
            .cloned()
            .collect()
    }

    /// Every MTA node's mark.
    pub fn marks(&self) -> impl Iterator<Item = (&NodeName, Mark)> {
        self.marks.iter().filter_map(|(n, m)| m.map(|m| (n, m)))
    }

    /// The latest judgement time the fleet's delivery evidence covers at
    /// `now`: the lowest watermark (silent nodes left out with
    /// `on_silent_mta: proceed`); `None` when no node holds anything back.
    pub fn limit(&self, now: i64) -> Option<i64> {
        self.marks
            .iter()
            .filter(|(n, _)| self.on_silent == OnSilentMta::Wait || !self.is_silent(n, now))
            .filter_map(|(_, m)| m.map(|m| m.at))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    fn fleet(mta: &[&str], on_silent: OnSilentMta) -> Fleet {
        Fleet {
            url: "redis://127.0.0.1".into(),
            node: NodeName::parse("mx1").unwrap(),
            password: None,
            ca_file: None,
            mta_nodes: mta.iter().map(|n| NodeName::parse(n).unwrap()).collect(),
            prefix: "nolist".into(),
            keep: Duration::from_secs(3600),
            max_events: 1_000_000,
            silent_after: Duration::from_secs(120),
            on_silent_mta: on_silent,
        }
    }

    fn n(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    #[test]
    fn the_lowest_watermark_limits_and_nothing_is_judged_before_every_node_reported() {
        let mut g = Gate::new(&fleet(&["mx2", "mx3"], OnSilentMta::Wait), 1000);
        assert_eq!(g.limit(1000), Some(i64::MIN));
        g.mark(&n("mx2"), 990, 1000);
        assert_eq!(g.limit(1000), Some(i64::MIN));
        g.mark(&n("mx3"), 995, 1000);
        assert_eq!(g.limit(1000), Some(990));
        // Backwards never counts; a stranger is ignored.
        g.mark(&n("mx2"), 900, 1001);
        g.mark(&n("mx9"), 5000, 1001);
        assert_eq!(g.limit(1001), Some(990));
    }

    #[test]
    fn no_mta_nodes_no_limit() {
        let g = Gate::new(&fleet(&[], OnSilentMta::Wait), 1000);
        assert_eq!(g.limit(1000), None);
    }

    #[test]
    fn a_silent_node_holds_back_bans_unless_told_to_proceed() {
        for (policy, expected) in [
            (OnSilentMta::Wait, Some(1000)),
            (OnSilentMta::Proceed, Some(1190)),
        ] {
            let mut g = Gate::new(&fleet(&["mx2", "mx3"], policy), 1000);
            g.mark(&n("mx2"), 1000, 1000);
            g.mark(&n("mx3"), 1000, 1000);
            // mx3 keeps reporting; mx2 goes quiet.
            g.mark(&n("mx3"), 1190, 1190);
            assert!(!g.is_silent(&n("mx2"), 1120));
            assert!(g.is_silent(&n("mx2"), 1190));
            assert_eq!(g.silent(1190), [n("mx2")]);
            assert_eq!(g.limit(1190), expected, "{policy:?}");
            // It comes back: reported as having been silent.
            assert!(g.mark(&n("mx2"), 1195, 1200));
            assert!(!g.mark(&n("mx2"), 1196, 1201));
        }
    }
}
