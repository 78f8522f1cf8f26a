//! One served zone: the planned records merged with the user's base zone,
//! with conflicts refused and the SOA serial managed across reloads.
//!
//! A zone is kept in DNS wire format between reloads: with ten thousand zones
//! the records' in-memory form (a hickory `Record` is 280 bytes before its
//! names) would cost more than the catalog that answers from them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_net::runtime::TokioRuntimeProvider;
use hickory_proto::ProtoError;
use hickory_proto::rr::{LowerName, Name as DnsName, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, ZoneType};

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
    /// A record has no DNS wire form that reads back (it could not be answered).
    #[error("{origin}: cannot serve {record}: {message}")]
    Encode {
        /// The zone.
        origin: String,
        /// The record, as master-file text.
        record: String,
        /// What hickory said.
        message: String,
    },
    /// hickory's zone handler refused the records (the message is hickory's).
    #[error("{0}")]
    Handler(String),
}

/// A zone ready to serve: its records (SOA included) and its serial.
#[derive(Clone, Debug)]
pub struct ZoneData {
    /// The zone apex.
    pub origin: DnsName,
    /// Every record, the SOA first (with the serial the config gave), in DNS
    /// wire format, each behind its length as two bytes: about 50 bytes a
    /// record. [`ZoneData::records`] reads them back.
    wire: Box<[u8]>,
    /// The serial the SOA carries.
    pub serial: u32,
    /// The digest of the content apart from the SOA serial, to tell whether a
    /// reload changed anything.
    digest: u64,
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
        let wire = encode(&origin, &records)?;
        Ok(ZoneData {
            origin,
            wire,
            serial,
            digest: content_digest(&records),
        })
    }

    /// What was served: the serial and a digest of everything else.
    pub fn served(&self) -> Served {
        Served {
            serial: self.serial,
            digest: self.digest,
        }
    }

    /// The serial to serve now that the config produced `self`, given what
    /// was served before (by this process, or by an earlier one as kept in
    /// the state): unchanged content keeps its serial; changed content gets
    /// the configured serial or one more than before, whichever is later
    /// (RFC 1982 arithmetic).
    pub fn succeed(mut self, previous: Option<Served>) -> ZoneData {
        let Some(prev) = previous else { return self };
        let serial = if prev.digest == self.digest {
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
        self.serial = serial;
        self
    }

    /// Every record, the SOA first and carrying [`ZoneData::serial`].
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        // `build` read every record back once, so none fails here.
        decode(&self.wire).map_while(Result::ok).map(|mut record| {
            if let RData::SOA(soa) = &mut record.data
                && record.name == self.origin
            {
                soa.serial = self.serial;
            }
            record
        })
    }

    /// The records keyed for hickory's in-memory zone handler.
    pub fn rrsets(&self) -> BTreeMap<RrKey, RecordSet> {
        let mut map: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for record in self.records() {
            let key = RrKey::new(LowerName::new(&record.name), record.record_type());
            map.entry(key)
                .or_insert_with(|| {
                    RecordSet::new(record.name.clone(), record.record_type(), self.serial)
                })
                .insert(record, self.serial);
        }
        map
    }

    /// hickory's in-memory handler for this zone (a primary, transfers as
    /// `axfr` says), holding no more memory than its records need: hickory
    /// grows every RRset's record list to room for four records (1,120
    /// bytes), and most RRsets here hold one or two.
    pub fn handler(
        &self,
        axfr: AxfrPolicy,
    ) -> Result<InMemoryZoneHandler<TokioRuntimeProvider>, ZoneError> {
        let mut handler =
            InMemoryZoneHandler::new(self.origin.clone(), self.rrsets(), ZoneType::Primary, axfr)
                .map_err(ZoneError::Handler)?;
        for rrset in handler.records_get_mut().values_mut() {
            let rrset = Arc::make_mut(rrset);
            let mut records: Vec<Record> = rrset.records_without_rrsigs().cloned().collect();
            records.shrink_to_fit();
            rrset.set_records(records);
        }
        Ok(handler)
    }

    /// Every owner name in the zone.
    pub fn names(&self) -> BTreeSet<DnsName> {
        self.records().map(|r| r.name).collect()
    }
}

/// `records` in DNS wire format, each behind its length; every record must
/// read back, so that [`ZoneData::records`] returns them all.
fn encode(origin: &DnsName, records: &[Record]) -> Result<Box<[u8]>, ZoneError> {
    let mut wire = Vec::new();
    let mut one = Vec::new();
    for record in records {
        let fail = |message: String| ZoneError::Encode {
            origin: origin.to_string(),
            record: record.to_string(),
            message,
        };
        one.clear();
        record
            .emit(&mut BinEncoder::new(&mut one))
            .map_err(|e| fail(e.to_string()))?;
        Record::read(&mut BinDecoder::new(&one)).map_err(|e| fail(e.to_string()))?;
        let len = u16::try_from(one.len()).map_err(|_| fail("too long".into()))?;
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&one);
    }
    Ok(wire.into_boxed_slice())
}

/// The records of [`encode`]'s output, in order.
fn decode(wire: &[u8]) -> impl Iterator<Item = Result<Record, ProtoError>> + '_ {
    let mut rest = wire;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((one, tail)) = tail.split_at_checked(len) else {
            rest = &[];
            return Some(Err(ProtoError::from("truncated record")));
        };
        rest = tail;
        Some(Record::read(&mut BinDecoder::new(one)).map_err(ProtoError::from))
    })
}

/// The digest of `records` with the SOA serial set to 0: of their
/// master-file lines, sorted.
fn content_digest(records: &[Record]) -> u64 {
    let mut lines: Vec<String> = records
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
    digest(&lines)
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
    let mut hash = crate::hash::Fnv1a::default();
    for line in lines {
        hash.bytes(line.as_bytes());
        hash.byte(b'\n');
    }
    hash.finish()
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
