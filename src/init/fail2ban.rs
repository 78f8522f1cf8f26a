//! fail2ban jails that ban the classic decoy's hitters: a jail whose
//! filter matches the decoy's log lines. Pure: the caller reads the files.

use std::collections::BTreeMap;

/// One INI-style fail2ban file as sections of keys (continuation lines,
/// indented, joined with a newline; `#` and `;` comments dropped).
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    let mut key: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &key {
                let v = out
                    .entry(section.clone())
                    .or_default()
                    .entry(k.clone())
                    .or_default();
                v.push('\n');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_owned();
            key = None;
            continue;
        }
        if let Some((k, v)) = trimmed.split_once(['=', ':']) {
            let k = k.trim().to_owned();
            out.entry(section.clone())
                .or_default()
                .insert(k.clone(), v.trim().to_owned());
            key = Some(k);
        }
    }
    out
}

/// The jails (settings merged in the order the files are given, later
/// wins, as fail2ban reads `jail.conf`, `jail.local`, `jail.d/*`) that are
/// enabled, with their filter name (options in `[...]` dropped).
pub fn enabled_jails(files: &[String]) -> Vec<(String, String)> {
    let mut merged: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for text in files {
        for (section, keys) in parse_ini(text) {
            merged.entry(section).or_default().extend(keys);
        }
    }
    let default_enabled = merged
        .get("DEFAULT")
        .and_then(|d| d.get("enabled"))
        .is_some_and(|v| v == "true");
    merged
        .iter()
        .filter(|(name, _)| *name != "DEFAULT" && *name != "INCLUDES")
        .filter(|(_, keys)| {
            keys.get("enabled")
                .map_or(default_enabled, |v| v.eq_ignore_ascii_case("true"))
        })
        .map(|(name, keys)| {
            let filter = keys.get("filter").map_or(name.as_str(), String::as_str);
            let filter = filter.split('[').next().unwrap_or(filter).trim();
            (name.clone(), filter.to_owned())
        })
        .collect()
}

/// Whether a jail bans decoy hitters: its filter is named for nolisting
/// or a decoy, or its `failregex` (`filter_text`, the filter file) names
/// the decoy's syslog name (plain or with `\/`).
pub fn bans_decoy_hitters(filter: &str, filter_text: &str, syslog_name: Option<&str>) -> bool {
    let named = ["nolist", "decoy"]
        .iter()
        .any(|w| filter.to_ascii_lowercase().contains(w));
    let regex = parse_ini(filter_text)
        .get("Definition")
        .and_then(|d| d.get("failregex"))
        .cloned()
        .unwrap_or_default();
    let logs_decoy =
        syslog_name.is_some_and(|n| regex.contains(n) || regex.contains(&n.replace('/', "\\/")));
    named || logs_decoy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_jails_merge_files_in_order() {
        let conf = "[DEFAULT]\nenabled = false\n[sshd]\nenabled = true\n[postfix-decoy]\nfilter = decoy[mode=x]\n".to_owned();
        let local = "[postfix-decoy]\nenabled = true\n".to_owned();
        assert_eq!(
            enabled_jails(std::slice::from_ref(&conf)),
            vec![("sshd".into(), "sshd".into())]
        );
        assert_eq!(
            enabled_jails(&[conf, local]),
            vec![
                ("postfix-decoy".into(), "decoy".into()),
                ("sshd".into(), "sshd".into())
            ]
        );
    }

    #[test]
    fn a_filter_matching_the_decoys_lines_is_recognised() {
        let filter = "[Definition]\nfailregex = ^%(__prefix_line)sNOQUEUE: reject\n    ^.*postfix\\/decoy\\/smtpd.*\\[<HOST>\\]\n";
        assert!(bans_decoy_hitters(
            "mail-trap",
            filter,
            Some("postfix/decoy")
        ));
        assert!(!bans_decoy_hitters(
            "mail-trap",
            filter,
            Some("postfix/other")
        ));
        assert!(!bans_decoy_hitters("mail-trap", filter, None));
        assert!(bans_decoy_hitters("postfix-nolisting", "", None));
        assert!(!bans_decoy_hitters(
            "sshd",
            "[Definition]\nfailregex = sshd\n",
            Some("postfix/decoy")
        ));
    }
}
