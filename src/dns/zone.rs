//! One served zone: the planned records merged with the user's base zone,
//! with conflicts refused and the SOA serial managed across reloads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::{LowerName, Name as DnsName, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;

use super::records::{RecordError, dns_name, owned_rrsets, planned_records};
use crate::plan::Zone;

/// Why a zone cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The plan did not convert to records.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The base zone file could not be read.
    #[error("{path}: cannot read the base zone: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The base zone file is not a valid master file.
    #[error("{path}: invalid base zone: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The base zone defines records nolist owns, or records outside the zone.
    #[error("{path}: the base zone conflicts with the plan:\n{}", .conflicts.join("\n"))]
    Conflict {
        /// The file.
        path: PathBuf,
        /// One line per conflicting RRset.
        conflicts: Vec<String>,
    },
    /// Neither the config nor a base zone provides SOA and NS.
    #[error(
        "{origin}: cannot serve a zone without SOA and NS: set dns.soa and dns.ns, or give the domain a base_zone that has them"
    )]
    Incomplete {
        /// The zone.
        origin: String,
    },
}

/// A zone ready to serve: its records (SOA included) and its serial.
#[derive(Clone, Debug)]
pub struct ZoneData {
    /// The zone apex.
    pub origin: DnsName,
    /// Every record, the SOA first.
    records: Vec<Record>,
    /// The serial the SOA carries.
    pub serial: u32,
    /// The content apart from the SOA serial, to tell whether a reload changed anything.
    fingerprint: Vec<String>,
}

impl ZoneData {
    /// Builds the zone from the plan and, if given, the base zone file.
    pub fn build(zone: &Zone, base: Option<&Path>) -> Result<ZoneData, ZoneError> {
        let origin = dns_name(&zone.origin)?;
        let planned_serial = zone.soa.as_ref().map_or(1, |s| s.serial);
        let mut records = planned_records(zone, planned_serial)?;
        if let Some(path) = base {
            let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
                path: path.to_owned(),
                source,
            })?;
            records.extend(base_records(zone, &origin, path, &text)?);
        }
        let soa = records
            .iter()
            .position(|r| r.record_type() == RecordType::SOA && r.name == origin);
        let has_ns = records
            .iter()
            .any(|r| r.record_type() == RecordType::NS && r.name == origin);
        let (Some(soa), true) = (soa, has_ns) else {
            return Err(ZoneError::Incomplete {
                origin: origin.to_string(),
            });
        };
        let soa_record = records.remove(soa);
        let serial = match &soa_record.data {
            RData::SOA(soa) => soa.serial,
            _ => 1,
        };
        records.insert(0, soa_record);
        let mut data = ZoneData {
            origin,
            records,
            serial,
            fingerprint: Vec::new(),
        };
        data.fingerprint = data.compute_fingerprint();
        Ok(data)
    }

    fn compute_fingerprint(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .records
            .iter()
            .map(|r| match &r.data {
                RData::SOA(soa) => {
                    let mut soa = soa.clone();
                    soa.serial = 0;
                    Record::from_rdata(r.name.clone(), r.ttl, RData::SOA(soa)).to_string()
                }
                _ => r.to_string(),
            })
            .collect();
        lines.sort();
        lines
    }

    /// What was served: the serial and a digest of everything else.
    pub fn served(&self) -> Served {
        Served {
            serial: self.serial,
            digest: digest(&self.fingerprint),
        }
    }

    /// The serial to serve now that the config produced `self`, given what
    /// was served before (by this process, or by an earlier one as kept in
    /// the state): unchanged content keeps its serial; changed content gets
    /// the configured serial or one more than before, whichever is later
    /// (RFC 1982 arithmetic).
    pub fn succeed(mut self, previous: Option<Served>) -> ZoneData {
        let Some(prev) = previous else { return self };
        let serial = if prev.digest == digest(&self.fingerprint) {
            if serial_gt(self.serial, prev.serial) {
                self.serial
            } else {
                prev.serial
            }
        } else {
            let next = prev.serial.wrapping_add(1).max(1);
            if serial_gt(self.serial, prev.serial) {
                self.serial
            } else {
                next
            }
        };
        self.set_serial(serial);
        self
    }

    fn set_serial(&mut self, serial: u32) {
        self.serial = serial;
        if let Some(RData::SOA(soa)) = self.records.first_mut().map(|r| &mut r.data) {
            soa.serial = serial;
        }
    }

    /// The records keyed for hickory's in-memory zone handler.
    pub fn rrsets(&self) -> BTreeMap<RrKey, RecordSet> {
        let mut map: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for record in &self.records {
            let key = RrKey::new(LowerName::new(&record.name), record.record_type());
            map.entry(key)
                .or_insert_with(|| {
                    RecordSet::new(record.name.clone(), record.record_type(), self.serial)
                })
                .insert(record.clone(), self.serial);
        }
        map
    }

    /// Every owner name in the zone.
    pub fn names(&self) -> BTreeSet<&DnsName> {
        self.records.iter().map(|r| &r.name).collect()
    }
}

/// A zone as served: its serial, and a digest of its content apart from the
/// serial (FNV-1a over the sorted record lines; stable across versions, so
/// it can be kept in the state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Served {
    /// The SOA serial.
    pub serial: u32,
    /// The content digest.
    pub digest: u64,
}

fn digest(lines: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lines.iter().flat_map(|l| l.bytes().chain([b'\n'])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `a` is later than `b` in serial-number arithmetic (RFC 1982).
fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Parses the base zone and refuses records nolist owns or that lie outside the zone.
fn base_records(
    zone: &Zone,
    origin: &DnsName,
    path: &Path,
    text: &str,
) -> Result<Vec<Record>, ZoneError> {
    let (_, rrsets) = Parser::new(text, Some(path.to_owned()), Some(origin.clone()))
        .parse()
        .map_err(|e| ZoneError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let owned = owned_rrsets(zone)?;
    let owned_names: BTreeSet<&DnsName> = owned.iter().map(|(n, _)| n).collect();
    let mut conflicts = Vec::new();
    let mut records = Vec::new();
    for rrset in rrsets.values() {
        let (name, rtype) = (rrset.name(), rrset.record_type());
        if !origin.zone_of(name) {
            conflicts.push(format!("  {name} {rtype}: outside the zone {origin}"));
        } else if owned.contains(&(name.clone(), rtype)) {
            conflicts.push(format!(
                "  {name} {rtype}: nolist owns this RRset (it comes from the config); remove it from the base zone"
            ));
        } else if rtype == RecordType::CNAME && owned_names.contains(name) {
            conflicts.push(format!(
                "  {name} CNAME: a CNAME cannot coexist with the records nolist plans at this name"
            ));
        } else {
            records.extend(rrset.records_without_rrsigs().cloned());
        }
    }
    if conflicts.is_empty() {
        Ok(records)
    } else {
        Err(ZoneError::Conflict {
            path: path.to_owned(),
            conflicts,
        })
    }
}

#[cfg(test)]
mod tests;
