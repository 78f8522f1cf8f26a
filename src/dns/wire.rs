//! Fitting an encoded response into the size a UDP client allows.
//!
//! hickory 0.26 truncates while it encodes: it stops at the first record
//! that does not fit, sets TC, and leaves a partly written record behind the
//! counted ones (its encoder's rollback moves the offset back but keeps the
//! bytes). So the server encodes without a limit and this module, which
//! only walks the wire format, cuts the message to size in one of two
//! well-formed ways:
//!
//! - drop additional records (RFC 2181 §9: extra information that does not
//!   fit is left out without TC; a referral, whose glue the client needs,
//!   still gets TC, RFC 9471);
//! - or, when the answer or authority section does not fit, send the header
//!   with TC, the question and the OPT record, and no records (as NSD does):
//!   the client retries over TCP and never sees a partial RRset.

/// The sections of a message, as byte offsets.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    /// End of the question section.
    question_end: usize,
    /// End of the authority section, where the additional section starts.
    authority_end: usize,
    /// Start and end of each additional record, in order.
    additionals: Vec<(usize, usize)>,
    /// The OPT record, if the last additional record is one.
    opt: Option<(usize, usize)>,
}

fn count(message: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([message[at], message[at + 1]]))
}

/// The offset after the domain name at `pos` (labels, ending in a root
/// label or a compression pointer).
fn skip_name(message: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *message.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xc0 => return (pos + 2 <= message.len()).then_some(pos + 2),
            _ => return None, // extended label types are not used in answers
        }
    }
}

/// The offset after the resource record at `pos`, and its type.
fn skip_record(message: &[u8], pos: usize) -> Option<(usize, u16)> {
    let fixed = skip_name(message, pos)?;
    let header = message.get(fixed..fixed + 10)?;
    let rtype = u16::from_be_bytes([header[0], header[1]]);
    let end = fixed + 10 + usize::from(u16::from_be_bytes([header[8], header[9]]));
    (end <= message.len()).then_some((end, rtype))
}

impl Layout {
    /// The layout of a complete message; `None` when it is not one (the
    /// counts promise more than the bytes hold, or bytes are left over).
    fn of(message: &[u8]) -> Option<Layout> {
        if message.len() < 12 {
            return None;
        }
        let mut pos = 12;
        for _ in 0..count(message, 4) {
            pos = skip_name(message, pos)? + 4;
        }
        if pos > message.len() {
            return None;
        }
        let question_end = pos;
        for _ in 0..count(message, 6) + count(message, 8) {
            pos = skip_record(message, pos)?.0;
        }
        let authority_end = pos;
        let mut additionals = Vec::new();
        let mut opt = None;
        for _ in 0..count(message, 10) {
            let (end, rtype) = skip_record(message, pos)?;
            if rtype == OPT {
                opt = Some((pos, end));
            } else {
                additionals.push((pos, end));
            }
            pos = end;
        }
        (pos == message.len()).then_some(Layout {
            question_end,
            authority_end,
            additionals,
            opt,
        })
    }
}

/// The OPT pseudo-record's type.
const OPT: u16 = 41;

/// `message` cut to at most `limit` bytes (see the module comment); the
/// message itself when it fits. `None` when it is not a well-formed message
/// (the caller answers SERVFAIL or nothing rather than send it).
pub fn fit(message: Vec<u8>, limit: usize) -> Option<Vec<u8>> {
    if message.len() <= limit {
        return Some(message);
    }
    let layout = Layout::of(&message)?;
    let opt = layout
        .opt
        .map_or(&[][..], |(start, end)| &message[start..end]);
    let referral = message[2] & 0x04 == 0 && count(&message, 6) == 0;
    if layout.authority_end + opt.len() <= limit && !referral {
        return Some(without_some_additionals(&message, &layout, opt, limit));
    }
    let mut out = Vec::with_capacity(layout.question_end + opt.len());
    out.extend_from_slice(&message[..layout.question_end]);
    out[2] |= 0x02; // TC
    out[6..10].fill(0); // no answer or authority records
    out[10..12].copy_from_slice(&u16::from(!opt.is_empty()).to_be_bytes());
    out.extend_from_slice(opt);
    Some(out)
}

/// The answer and authority sections whole, then the additional records
/// that fit (in order), then the OPT record.
fn without_some_additionals(message: &[u8], layout: &Layout, opt: &[u8], limit: usize) -> Vec<u8> {
    let mut out = message[..layout.authority_end].to_vec();
    let mut kept = 0u16;
    for &(start, end) in &layout.additionals {
        // Records may compress names against earlier ones, all of which
        // stay: keeping a prefix keeps every pointer valid.
        if out.len() + (end - start) + opt.len() > limit {
            break;
        }
        out.extend_from_slice(&message[start..end]);
        kept += 1;
    }
    out.extend_from_slice(opt);
    let additional = kept + u16::from(!opt.is_empty());
    out[10..12].copy_from_slice(&additional.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: header with `flags`, question `a.example A`, then
    /// `answers` A records and `additionals` A records (names compressed
    /// against the question), then an OPT record if `opt`.
    fn message(flags: u8, answers: u16, authorities: u16, additionals: u16, opt: bool) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, flags, 0x00, 0, 1];
        m.extend_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(&authorities.to_be_bytes());
        m.extend_from_slice(&(additionals + u16::from(opt)).to_be_bytes());
        m.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        for i in 0..answers + authorities + additionals {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2]);
            m.push(i as u8);
        }
        if opt {
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn a_message_that_fits_is_left_alone() {
        let m = message(0x84, 3, 0, 2, true);
        assert_eq!(fit(m.clone(), m.len()), Some(m));
    }

    #[test]
    fn an_answer_that_does_not_fit_becomes_header_question_and_opt_with_tc() {
        // 27 bytes of header and question, 16 per record, 11 of OPT.
        let m = message(0x84, 40, 0, 0, true);
        let cut = fit(m.clone(), 512).unwrap();
        assert_eq!(cut.len(), 27 + 11);
        assert_eq!(cut[2], 0x86, "QR, AA and TC");
        assert_eq!(&cut[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&cut[..2], &m[..2]);
        assert_eq!(
            &cut[27..],
            &m[m.len() - 11..],
            "the OPT record, DO bit and all"
        );
        assert!(Layout::of(&cut).is_some(), "well formed");
        // Without EDNS: no OPT, and still no partial record.
        let plain = fit(message(0x84, 40, 0, 0, false), 512).unwrap();
        assert_eq!(plain.len(), 27);
        assert_eq!(&plain[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn additional_records_that_do_not_fit_are_dropped_without_tc() {
        let m = message(0x84, 2, 1, 30, true);
        let cut = fit(m, 200).unwrap();
        assert!(cut.len() <= 200);
        assert_eq!(cut[2] & 0x02, 0, "no TC for left-out extra information");
        let layout = Layout::of(&cut).expect("well formed");
        assert_eq!(&cut[6..10], &[0, 2, 0, 1], "answer and authority whole");
        // (200 - 27 - 3*16 - 11) / 16 = 7 whole additional records, then OPT.
        assert_eq!(layout.additionals.len(), 7);
        assert_eq!(&cut[10..12], &[0, 8]);
        assert!(layout.opt.is_some());
    }

    #[test]
    fn a_referral_whose_glue_does_not_fit_gets_tc() {
        // AA clear, no answers: the authority's NS need their glue.
        let m = message(0x80, 0, 2, 30, false);
        let cut = fit(m, 200).unwrap();
        assert_eq!(cut[2] & 0x02, 0x02);
        assert_eq!(&cut[6..12], &[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut m = message(0x84, 40, 0, 0, false);
        m.push(0); // a stray byte after the counted records
        assert_eq!(fit(m.clone(), 512), None);
        m.truncate(m.len() - 10); // a record cut short
        assert_eq!(fit(m, 512), None);
        assert_eq!(fit(vec![0; 600][..11].to_vec(), 5), None);
    }

    #[test]
    fn names_may_be_pointers_or_labels() {
        let m = b"\x01a\x00\xc0\x00\x03abc\xc0\x00";
        assert_eq!(skip_name(m, 0), Some(3));
        assert_eq!(skip_name(m, 3), Some(5));
        assert_eq!(skip_name(m, 5), Some(11));
        assert_eq!(skip_name(b"\x40", 0), None);
        assert_eq!(skip_name(b"\x05ab", 0), None);
    }
}
