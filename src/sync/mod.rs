//! `diff` and `apply`: the plan's records against a DNS provider's.
//!
//! What nolist manages at a provider is [`records::provider_rrsets`]: the
//! apex MX and the A/AAAA of the in-zone MX hosts it defines, the same
//! ownership `serve` and `plan --format nsupdate` use, without the apex SOA
//! and NS. [`desired`] turns a planned zone into those RRsets,
//! [`changes`] compares them with what a provider holds, and [`lines`]
//! lists the differences record by record. All of that is pure; only
//! [`read`] and [`apply`] call the provider (the providers crate does the
//! I/O). Rendering is in [`report`]; [`provider`] builds the providers
//! crate's settings from the config's `provider` table. The module exists
//! only with the `providers` feature.

pub mod provider;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::rr::RData;
use nolist_providers::{Change, Key, Provider, ProviderError, Rdata, RecordType, RrSet};
use serde::Serialize;

use crate::dns::records::{self, RecordError};
use crate::plan::Zone;

/// What one zone should hold at its provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The zone, absolute (`example.org.`).
    pub zone: String,
    /// Every RRset nolist manages there, planned or not (an unplanned one
    /// must not exist), sorted.
    pub keys: Vec<Key>,
    /// The planned RRsets, sorted by key.
    pub rrsets: Vec<RrSet>,
}

/// The RRsets `zone` plans at its provider.
pub fn desired(zone: &Zone) -> Result<Desired, RecordError> {
    let managed = records::provider_rrsets(zone)?;
    let mut sets: BTreeMap<Key, RrSet> = BTreeMap::new();
    for record in records::planned_records(zone, 0)? {
        if !managed.contains(&(record.name.clone(), record.record_type())) {
            continue;
        }
        let data = match &record.data {
            RData::MX(mx) => Rdata::mx(mx.preference, &mx.exchange.to_ascii()),
            RData::A(a) => Rdata::A(a.0),
            RData::AAAA(a) => Rdata::Aaaa(a.0),
            _ => continue,
        };
        let key = Key::new(&record.name.to_ascii(), data.rtype());
        sets.entry(key.clone())
            .or_insert_with(|| RrSet {
                key,
                ttl: record.ttl,
                records: BTreeSet::new(),
            })
            .records
            .insert(data);
    }
    let keys = managed
        .iter()
        .filter_map(|(name, t)| {
            let rtype = RecordType::parse(&t.to_string())?;
            Some(Key::new(&name.to_ascii(), rtype))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Desired {
        zone: zone.origin.to_string(),
        keys,
        rrsets: sets.into_values().collect(),
    })
}

/// The RRsets whose content or TTL differs between `desired` and
/// `current` (only `desired.keys` count), in key order.
pub fn changes(desired: &Desired, current: &[RrSet]) -> Vec<Change> {
    let want: BTreeMap<&Key, &RrSet> = desired.rrsets.iter().map(|s| (&s.key, s)).collect();
    let have: BTreeMap<&Key, &RrSet> = current.iter().map(|s| (&s.key, s)).collect();
    desired
        .keys
        .iter()
        .filter_map(|key| {
            let after = want.get(key).copied();
            let before = have.get(key).copied();
            (after != before).then(|| Change {
                key: key.clone(),
                before: before.cloned(),
                after: after.cloned(),
            })
        })
        .collect()
}

/// What happens to one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Planned, not at the provider: `+`.
    Add,
    /// At the provider, not planned: `-`.
    Delete,
    /// At both, with another TTL: `~`.
    Ttl,
}

/// One record that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `add`, `delete` or `ttl`.
    pub op: Op,
    /// The owner, absolute.
    pub name: String,
    /// `MX`, `A` or `AAAA`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The record data in master-file form.
    pub data: String,
    /// The planned TTL (`add`, `ttl`) or the current one (`delete`).
    pub ttl: u32,
    /// The current TTL (`ttl` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_ttl: Option<u32>,
}

/// The record-by-record differences of `changes`: per RRset, deletions,
/// then TTL changes, then additions, each in record order.
pub fn lines(changes: &[Change]) -> Vec<Line> {
    let mut out = Vec::new();
    for change in changes {
        let before = change.before.as_ref();
        let after = change.after.as_ref();
        let empty = BTreeSet::new();
        let old = before.map_or(&empty, |s| &s.records);
        let new = after.map_or(&empty, |s| &s.records);
        let line = |op, data: &Rdata, ttl, old_ttl| Line {
            op,
            name: change.key.name.clone(),
            rtype: change.key.rtype.as_str().to_owned(),
            data: data.to_string(),
            ttl,
            old_ttl,
        };
        for r in old.difference(new) {
            out.push(line(Op::Delete, r, before.map_or(0, |s| s.ttl), None));
        }
        if let (Some(b), Some(a)) = (before, after)
            && a.ttl != b.ttl
        {
            for r in old.intersection(new) {
                out.push(line(Op::Ttl, r, a.ttl, Some(b.ttl)));
            }
        }
        for r in new.difference(old) {
            out.push(line(Op::Add, r, after.map_or(0, |s| s.ttl), None));
        }
    }
    out
}

/// Reads what `provider` holds of `desired` and compares.
pub async fn read(
    provider: &dyn Provider,
    desired: &Desired,
) -> Result<Vec<Change>, ProviderError> {
    let current = provider.read(&desired.zone, &desired.keys).await?;
    Ok(changes(desired, &current))
}

/// Applies `changes`, then reads back: the changes still left (none when
/// the provider now holds the plan).
pub async fn apply(
    provider: &dyn Provider,
    desired: &Desired,
    changes: &[Change],
) -> Result<Vec<Change>, ProviderError> {
    provider.apply(&desired.zone, changes).await?;
    read(provider, desired).await
}

#[cfg(test)]
mod tests;
