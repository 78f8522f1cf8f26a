//! A per-worker cache of complete UDP answers.
//!
//! The zones are immutable between reloads, so the answer to a plain query
//! depends only on its question, on whether it carries EDNS (version, DO
//! bit), and on the RD and CD bits it echoes. The first such query goes
//! through hickory's catalog; its wire answer is stored, and later queries
//! get a copy with their own ID, flags and question spelling (resolvers
//! randomise case, RFC 0x20-style, and expect it echoed). The cache belongs
//! to one snapshot and one worker, has a fixed capacity, and is cleared when
//! full, so a flood of random names costs a bounded amount of memory.

use std::collections::HashMap;

/// Answers up to this size are cached (they fit any UDP client).
const MAX_CACHED_ANSWER: usize = 512;

/// The cacheable part of a query, parsed without allocating more than the key.
#[derive(Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// Lower-cased question name, type, class, then EDNS shape.
    key: Vec<u8>,
    /// End of the question name in the packet (it starts at 12).
    name_end: usize,
}

impl CacheKey {
    /// The key of a plain query: QR=0, opcode QUERY, one question with an
    /// uncompressed name, no answer or authority records, and at most one
    /// additional record, which must be a root OPT. Anything else is `None`
    /// and goes the full way.
    pub fn of(packet: &[u8]) -> Option<CacheKey> {
        let header = packet.get(..12)?;
        let flags = header[2];
        if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
            return None; // a response, or not a QUERY
        }
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
            return None;
        }
        let mut key = Vec::with_capacity(64);
        let mut pos = 12;
        loop {
            let len = usize::from(*packet.get(pos)?);
            if len & 0xc0 != 0 {
                return None; // compression or extended label types: full path
            }
            key.push(len as u8);
            pos += 1;
            if len == 0 {
                break;
            }
            let label = packet.get(pos..pos + len)?;
            key.extend(label.iter().map(u8::to_ascii_lowercase));
            pos += len;
            if key.len() > 255 {
                return None;
            }
        }
        let name_end = pos;
        key.extend_from_slice(packet.get(pos..pos + 4)?); // type and class
        pos += 4;
        if count(10) == 1 {
            // The OPT pseudo-record: root owner, type 41.
            let opt = packet.get(pos..pos + 11)?;
            if opt[0] != 0 || opt[1..3] != [0, 41] {
                return None;
            }
            let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
            if packet.len() != pos + 11 + rdlen {
                return None;
            }
            // Extended rcode, version and the DO bit; the payload size does
            // not matter for answers of at most 512 bytes.
            key.extend_from_slice(&[1, opt[5], opt[6], opt[7] & 0x80]);
        } else if packet.len() != pos {
            return None;
        } else {
            key.push(0);
        }
        Some(CacheKey { key, name_end })
    }
}

/// Complete answers by question, for one snapshot.
#[derive(Debug)]
pub struct AnswerCache {
    entries: HashMap<Vec<u8>, Vec<u8>>,
    capacity: usize,
}

impl AnswerCache {
    /// An empty cache that holds at most `capacity` answers.
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// Forgets everything (a new snapshot is being served).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Writes the cached answer to `query` into `out`; false on a miss.
    pub fn answer(&self, key: &CacheKey, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(cached) = self.entries.get(&key.key) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(cached);
        // ID, then RD (byte 2, bit 0) and CD (byte 3, bit 4) as the client sent them.
        out[..2].copy_from_slice(&query[..2]);
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        // The question as spelled by the client (same length: same name).
        out[12..key.name_end].copy_from_slice(&query[12..key.name_end]);
        true
    }

    /// Stores `answer` for `key` when it is a small, complete NOERROR or
    /// NXDOMAIN answer; clears the cache first when it is full.
    pub fn store(&mut self, key: CacheKey, answer: &[u8]) {
        let rcode = answer.get(3).map(|b| b & 0x0f);
        let truncated = answer.get(2).is_some_and(|b| b & 0x02 != 0);
        if answer.len() > MAX_CACHED_ANSWER || truncated || !matches!(rcode, Some(0 | 3)) {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries.insert(key.key, answer.to_vec());
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16, flags: [u8; 2], opt: Option<[u8; 11]>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&flags);
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(opt) = opt {
            p.extend_from_slice(&opt);
        }
        p
    }

    const OPT: [u8; 11] = [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn keys_ignore_case_id_and_flags_but_not_type_or_edns() {
        let a = CacheKey::of(&query(1, "Example.COM", 15, [1, 0], None)).unwrap();
        let b = CacheKey::of(&query(2, "example.com", 15, [0, 0x10], None)).unwrap();
        assert_eq!(a.key, b.key);
        let c = CacheKey::of(&query(1, "example.com", 1, [1, 0], None)).unwrap();
        assert_ne!(a.key, c.key);
        let d = CacheKey::of(&query(1, "example.com", 15, [1, 0], Some(OPT))).unwrap();
        assert_ne!(a.key, d.key);
        let mut dnssec = OPT;
        dnssec[7] = 0x80;
        let e = CacheKey::of(&query(1, "example.com", 15, [1, 0], Some(dnssec))).unwrap();
        assert_ne!(d.key, e.key);
    }

    #[test]
    fn unusual_queries_take_the_full_path() {
        let plain = query(1, "example.com", 15, [1, 0], None);
        let mut response = plain.clone();
        response[2] |= 0x80;
        let mut notify = plain.clone();
        notify[2] = 4 << 3;
        let mut two = plain.clone();
        two[5] = 2;
        let mut pointer = plain[..12].to_vec();
        pointer.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1]);
        let mut trailing = plain.clone();
        trailing.push(0);
        for p in [
            &plain[..11],
            &plain[..plain.len() - 1],
            &response,
            &notify,
            &two,
            &pointer,
            &trailing,
        ] {
            assert!(CacheKey::of(p).is_none(), "{p:?}");
        }
    }

    #[test]
    fn hits_echo_id_flags_and_question_case() {
        let mut cache = AnswerCache::new(8);
        let first = query(1, "example.com", 15, [1, 0], None);
        // A fake answer: the question echoed, QR|AA, NOERROR, one byte of "records".
        let mut answer = first.clone();
        answer[2] = 0x85;
        answer[3] = 0x00;
        answer.push(0xee);
        cache.store(CacheKey::of(&first).unwrap(), &answer);
        let second = query(0xbeef, "ExAmple.Com", 15, [0, 0x10], None);
        let mut out = Vec::new();
        assert!(cache.answer(&CacheKey::of(&second).unwrap(), &second, &mut out));
        assert_eq!(&out[..2], &[0xbe, 0xef]);
        assert_eq!(out[2], 0x84, "RD cleared as the client asked");
        assert_eq!(out[3], 0x10, "CD echoed");
        assert_eq!(&out[12..25], &second[12..25]);
        assert_eq!(out.last(), Some(&0xee));
    }

    #[test]
    fn only_small_complete_answers_are_stored_and_capacity_is_bounded() {
        let mut cache = AnswerCache::new(2);
        let q = query(1, "a.example", 1, [1, 0], None);
        let mut servfail = q.clone();
        servfail[3] = 2;
        cache.store(CacheKey::of(&q).unwrap(), &servfail);
        let mut tc = q.clone();
        tc[2] = 0x86;
        cache.store(CacheKey::of(&q).unwrap(), &tc);
        cache.store(CacheKey::of(&q).unwrap(), &vec![0; 600]);
        assert!(cache.is_empty());
        for name in ["a.example", "b.example", "c.example"] {
            let q = query(1, name, 1, [1, 0], None);
            cache.store(CacheKey::of(&q).unwrap(), &q);
        }
        assert!(cache.len() <= 2);
    }
}
