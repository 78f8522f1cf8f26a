//! Pure parsers for the Postfix files `nolist init` reads: `main.cf`
//! (`key = value` with continuation lines and `$name` references),
//! `master.cf` (service lines with `-o key=value` overrides) and the
//! lookup tables a decoy's restrictions name (pcre/regexp/hash).
//!
//! Nothing here reads a file: the callers pass the text, so every rule is
//! tested on strings.

use std::collections::BTreeMap;

/// The logical lines of a Postfix file: comments and blank lines dropped,
/// a line that starts with whitespace joined to the one before (Postfix's
/// continuation rule for both `main.cf` and `master.cf`). Each comes with
/// the 1-based number of its first physical line, for the `# CHECK:` notes.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = line.starts_with([' ', '\t']);
        match out.last_mut() {
            Some((_, last)) if continues => {
                last.push(' ');
                last.push_str(trimmed);
            }
            _ => out.push((i + 1, trimmed.to_owned())),
        }
    }
    out
}

/// The most `$name` references one expansion follows: `a = $b$b$b…`
/// nested 20 deep would otherwise take forever.
const MAX_REFERENCES: usize = 10_000;

/// `main.cf`: the parameters as written (later assignments win, as in
/// Postfix), with [`MainCf::get`] expanding `$name` references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MainCf {
    params: BTreeMap<String, String>,
}

impl MainCf {
    /// Parses `main.cf` text. A line without `=` is ignored (Postfix warns
    /// about it and ignores it too).
    pub fn parse(text: &str) -> MainCf {
        let mut params = BTreeMap::new();
        for (_, line) in logical_lines(text) {
            if let Some((key, value)) = line.split_once('=') {
                params.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
        MainCf { params }
    }

    /// The value of `key` as written, without expansion.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// The value of `key` with `$name` and `${name}` expanded (through
    /// [`MainCf::expand`]), falling back to the Postfix default of the few
    /// parameters `init` reads.
    pub fn get(&self, key: &str) -> Option<String> {
        let raw = self
            .raw(key)
            .map(str::to_owned)
            .or_else(|| self.default(key))?;
        Some(self.expand(&raw))
    }

    /// The Postfix defaults `init` depends on: `mydomain` is `myhostname`
    /// less its first label, `mydestination` the local names only.
    fn default(&self, key: &str) -> Option<String> {
        match key {
            "mydomain" => {
                let host = self.get("myhostname")?;
                host.split_once('.').map(|(_, rest)| rest.to_owned())
            }
            "mydestination" => Some("$myhostname, localhost.$mydomain, localhost".into()),
            "inet_interfaces" => Some("all".into()),
            _ => None,
        }
    }

    /// `value` with every `$name` / `${name}` / `$(name)` replaced by that
    /// parameter's expanded value; an unknown name becomes empty, as in
    /// Postfix. At most 20 levels deep, so a loop (`a = $b`, `b = $a`)
    /// ends.
    pub fn expand(&self, value: &str) -> String {
        self.expand_depth(value, 20, &mut { MAX_REFERENCES })
    }

    fn expand_depth(&self, value: &str, depth: u8, budget: &mut usize) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = rest.find('$') {
            if *budget == 0 {
                return out;
            }
            *budget -= 1;
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = match after.chars().next() {
                Some(open @ ('{' | '(')) => {
                    let close = if open == '{' { '}' } else { ')' };
                    match after.find(close) {
                        Some(end) => (&after[1..end], &after[end + 1..]),
                        None => (&after[1..], ""),
                    }
                }
                _ => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            if name.is_empty() {
                out.push('$');
            } else if depth > 0 {
                let inner = self
                    .raw(name)
                    .map(str::to_owned)
                    .or_else(|| self.default(name))
                    .unwrap_or_default();
                out.push_str(&self.expand_depth(&inner, depth - 1, budget));
            }
            rest = tail;
        }
        out.push_str(rest);
        out
    }
}

/// A Postfix list value (`a, b c`): items separated by commas and/or
/// whitespace, `{ ... }` groups kept whole.
pub fn list(value: &str) -> Vec<String> {
    split_fields(value, |c| c == ',' || c.is_whitespace())
}

/// Splits `text` on `sep`, keeping `{ ... }` groups (Postfix's way of
/// putting separators inside one value) as one item with the braces.
fn split_fields(text: &str, sep: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if depth == 0 && sep(c) => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One `master.cf` service line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The line it starts on.
    pub line: usize,
    /// The service field: `smtp`, `192.0.2.10:smtp`, `[::1]:25`, …
    pub service: String,
    /// `inet`, `unix`, `pass`, …
    pub kind: String,
    /// The command (first word of the command field), e.g. `smtpd`.
    pub command: String,
    /// Its `-o key=value` overrides, in order, `{ }` around a value removed.
    pub overrides: Vec<(String, String)>,
}

impl Service {
    /// The last `-o` override of `key`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The address part of an `inet` service (`192.0.2.10` of
    /// `192.0.2.10:smtp`, `2001:db8::10` of `[2001:db8::10]:smtp`); `None`
    /// for a service on every `inet_interfaces` address.
    pub fn address(&self) -> Option<&str> {
        let (host, _) = self.service.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (!host.is_empty()).then_some(host)
    }

    /// The port part: `smtp` of `192.0.2.10:smtp` or of `smtp`.
    pub fn port(&self) -> &str {
        self.service
            .rsplit_once(':')
            .map_or(self.service.as_str(), |(_, p)| p)
    }

    /// Whether this is an SMTP server on port 25.
    pub fn is_smtpd_on_25(&self) -> bool {
        self.kind == "inet" && self.command == "smtpd" && matches!(self.port(), "smtp" | "25")
    }
}

/// Parses `master.cf`: each logical line's eight fields (service, type,
/// private, unpriv, chroot, wakeup, maxproc, command) and the command's
/// `-o` arguments (`-o key=value`, `-okey=value` and `-o { key = value
/// with spaces }`). As in Postfix, `-o key = value` without braces sets
/// nothing (the `=` and the value are separate arguments). Lines with
/// fewer than eight fields are skipped.
pub fn parse_master(text: &str) -> Vec<Service> {
    let mut out = Vec::new();
    for (line, text) in logical_lines(text) {
        let fields = split_fields(&text, char::is_whitespace);
        if fields.len() < 8 {
            continue;
        }
        out.push(Service {
            line,
            service: fields[0].clone(),
            kind: fields[1].clone(),
            command: fields[7].clone(),
            overrides: overrides(&fields[8..]),
        });
    }
    out
}

/// The `-o` overrides among a command's arguments.
fn overrides(args: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let setting = if arg == "-o" {
            i += 1;
            args.get(i).map(String::as_str)
        } else {
            arg.strip_prefix("-o")
        };
        i += 1;
        let Some(mut setting) = setting.map(str::to_owned) else {
            continue;
        };
        if let Some(inner) = setting.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            setting = inner.trim().to_owned();
        }
        if let Some((k, v)) = setting.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .map_or(v, str::trim);
            out.push((k.trim().to_owned(), v.to_owned()));
        }
    }
    out
}

/// What a lookup table answers: the reply of a table that answers a `4xx`
/// to every client, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableAnswer {
    /// Every lookup matches a rule answering this reply (e.g. `450 4.7.1
    /// Service temporarily unavailable`).
    Everything(String),
    /// Every entry answers 4xx, but only for the keys it lists (an
    /// indexed table): a decoy, if its keys cover the senders.
    Listed(String),
    /// Not a temporary-failure table.
    No,
}

/// Reads a pcre/regexp table (`/pattern/flags action`, `if`/`endif`
/// blocks ignored) or an indexed (hash, lmdb, cdb, …) table's source
/// (`key action`). A pcre/regexp table answers everything when its first
/// rule's pattern matches any string (`.`, `^`, `.*`, `^.*`, `$`, …) and
/// its action is a `4xx` reply.
pub fn table_answer(kind: &str, text: &str) -> TableAnswer {
    let rules: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim();
            if matches!(kind, "pcre" | "regexp") {
                pattern_rule(l)
            } else {
                let (key, action) = l.split_once(char::is_whitespace)?;
                Some((key.to_owned(), action.trim().to_owned()))
            }
        })
        .collect();
    let is_4xx = |action: &str| {
        let code = action.get(..3).unwrap_or("");
        code.starts_with('4')
            && code.bytes().all(|b| b.is_ascii_digit())
            && action.as_bytes().get(3).is_none_or(|b| *b == b' ')
    };
    match kind {
        "pcre" | "regexp" => match rules.first() {
            Some((pattern, action)) if matches_all(pattern) && is_4xx(action) => {
                TableAnswer::Everything(action.clone())
            }
            _ => TableAnswer::No,
        },
        _ => match rules.first() {
            Some((_, action)) if rules.iter().all(|(_, a)| is_4xx(a)) => {
                TableAnswer::Listed(action.clone())
            }
            _ => TableAnswer::No,
        },
    }
}

/// `/pattern/flags action` as (pattern, action); `!/pattern/` (a negated
/// match) and `if`/`endif` lines give `None`.
fn pattern_rule(line: &str) -> Option<(String, String)> {
    let delim = line.chars().next()?;
    if delim.is_alphanumeric() || delim == '!' {
        return None;
    }
    let body = &line[delim.len_utf8()..];
    let end = body.find(delim)?;
    let pattern = &body[..end];
    let rest = &body[end + delim.len_utf8()..];
    let action = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    Some((pattern.to_owned(), action.trim().to_owned()))
}

/// Whether a regular expression matches every string: the forms decoy
/// guides use (anything else is not recognised, and `init` says so).
fn matches_all(pattern: &str) -> bool {
    matches!(
        pattern,
        "." | "^" | "$" | ".*" | "^.*" | ".*$" | "^.*$" | "" | "^.+" | ".+" | "^(.*)$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_cf_joins_continuations_and_expands_references() {
        let cf = MainCf::parse(
            "# comment\nmyhostname = mail.example.org\nmydestination = $myhostname,\n  localhost.$mydomain, ${mydomain}\n   # indented comment\nrelay_domains=$(mydomain) other.example\n",
        );
        assert_eq!(
            cf.get("mydestination").unwrap(),
            "mail.example.org, localhost.example.org, example.org"
        );
        assert_eq!(
            cf.get("relay_domains").unwrap(),
            "example.org other.example"
        );
        assert_eq!(cf.get("inet_interfaces").unwrap(), "all");
        assert_eq!(cf.get("nothing"), None);
    }

    #[test]
    fn main_cf_reference_loops_end() {
        let cf = MainCf::parse("a = x$b\nb = $a\n");
        assert!(cf.get("a").unwrap().starts_with("xx"));
        let bomb = MainCf::parse("a = $b$b$b$b$b$b$b$b\nb = $a$a$a$a$a$a$a$a\n");
        assert_eq!(bomb.get("a").unwrap(), "");
        let wide = MainCf::parse(&format!("b = x\na = {}\n", "$b".repeat(20_000)));
        assert_eq!(wide.get("a").unwrap().len(), MAX_REFERENCES);
    }

    #[test]
    fn list_splits_on_commas_and_spaces_keeping_braces() {
        assert_eq!(list("a, b\tc,,{ d e }"), vec!["a", "b", "c", "{ d e }"]);
    }

    #[test]
    fn master_cf_reads_fields_overrides_and_continuations() {
        let text = "\
smtp      inet  n       -       y       -       -       smtpd
# a decoy
192.0.2.10:smtp\tinet n - n - - smtpd
\t-o syslog_name=postfix/decoy
    -o { smtpd_client_restrictions = pcre:/etc/postfix/d.pcre, permit }
  -o smtpd_helo_restrictions = defer
 -osmtpd_delay_reject=no
[2001:db8::10]:25 inet n - n - - smtpd
pickup    unix  n       -       y       60      1       pickup
short line
";
        let services = parse_master(text);
        assert_eq!(services.len(), 4);
        let decoy = &services[1];
        assert_eq!(decoy.line, 3);
        assert_eq!(decoy.address(), Some("192.0.2.10"));
        assert!(decoy.is_smtpd_on_25());
        assert_eq!(decoy.option("syslog_name"), Some("postfix/decoy"));
        assert_eq!(
            decoy.option("smtpd_client_restrictions"),
            Some("pcre:/etc/postfix/d.pcre, permit")
        );
        assert_eq!(decoy.option("smtpd_helo_restrictions"), None);
        assert_eq!(decoy.option("smtpd_delay_reject"), Some("no"));
        assert_eq!(services[0].address(), None);
        assert_eq!(services[2].address(), Some("2001:db8::10"));
        assert!(services[2].is_smtpd_on_25());
        assert!(!services[3].is_smtpd_on_25());
    }

    #[test]
    fn tables_that_defer_everything_are_recognised() {
        assert_eq!(
            table_answer("pcre", "# decoy\n/./ 450 4.7.1 Try later\n"),
            TableAnswer::Everything("450 4.7.1 Try later".into())
        );
        assert_eq!(
            table_answer("regexp", "/^/i 451 Busy"),
            TableAnswer::Everything("451 Busy".into())
        );
        assert_eq!(table_answer("pcre", "/./ REJECT"), TableAnswer::No);
        assert_eq!(table_answer("pcre", "/^spam/ 450 no"), TableAnswer::No);
        assert_eq!(table_answer("pcre", "/./ 4501 x"), TableAnswer::No);
        assert_eq!(
            table_answer("hash", "0.0.0.0/0 450 x\n::/0 450 y\n"),
            TableAnswer::Listed("450 x".into())
        );
        assert_eq!(table_answer("hash", "a OK\n"), TableAnswer::No);
        assert_eq!(table_answer("pcre", ""), TableAnswer::No);
    }
}
