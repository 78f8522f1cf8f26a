//! The fail2ban backend, for operators who keep fail2ban as the enforcer:
//! bans go into an existing jail with `fail2ban-client set JAIL banip …`
//! and out with `unbanip`, many addresses per call, and are read back with
//! `get JAIL banip`. The jail's own action (nftables, iptables, …) does the
//! blocking and the jail's `bantime` applies: a ban fail2ban lifts before
//! nolist's ends is added again at the next reconcile, and one nolist lifted
//! is unbanned. nolist never changes the jail's settings.

use std::path::PathBuf;

use ipnet::IpNet;

use super::{Change, EnforceError, Enforcer, Report, element, exec, parse_element};
use crate::config::Fail2banSpec;

/// Addresses per `fail2ban-client` call.
const CHUNK: usize = 500;

/// The fail2ban backend.
#[derive(Clone, Debug)]
pub struct Fail2ban {
    /// `fail2ban-client`, by name or path.
    pub client: String,
    /// The server's socket (`-s`), when not the default.
    pub socket: Option<PathBuf>,
    /// The jail.
    pub jail: String,
}

impl Fail2ban {
    /// The backend for `bans.enforce.fail2ban`.
    pub fn new(spec: &Fail2banSpec) -> Fail2ban {
        Fail2ban {
            client: spec.client.clone(),
            socket: spec.socket.clone(),
            jail: spec.jail.clone(),
        }
    }

    fn call(&self, words: &[&str]) -> Result<String, EnforceError> {
        let socket = self.socket.as_ref().map(|s| s.display().to_string());
        let mut args: Vec<&str> = Vec::with_capacity(words.len() + 2);
        if let Some(s) = &socket {
            args.extend(["-s", s.as_str()]);
        }
        args.extend(words);
        exec::run(&self.client, &args, None, exec::TIMEOUT)
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    fn each_chunk(&self, verb: &str, targets: &[String]) -> Result<(), EnforceError> {
        for chunk in targets.chunks(CHUNK) {
            let mut words = vec!["set", self.jail.as_str(), verb];
            words.extend(chunk.iter().map(String::as_str));
            self.call(&words)?;
        }
        Ok(())
    }
}

/// The addresses of `get JAIL banip` output (space or newline separated).
fn parse_banip(text: &str) -> Result<Vec<IpNet>, super::Unreadable> {
    text.split_whitespace().map(parse_element).collect()
}

impl Enforcer for Fail2ban {
    fn name(&self) -> &'static str {
        "fail2ban"
    }

    /// The server answers and the jail exists.
    fn check(&mut self) -> Result<(), EnforceError> {
        self.call(&["status", self.jail.as_str()]).map(|_| ())
    }

    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let text = self.call(&["get", self.jail.as_str(), "banip"])?;
        parse_banip(&text)
            .map(Some)
            .map_err(|message| EnforceError::Output {
                tool: self.client.clone(),
                message: message.to_string(),
            })
    }

    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let remove: Vec<String> = change.remove.iter().map(element).collect();
        let add: Vec<String> = change.add.iter().map(|(n, _)| element(n)).collect();
        self.each_chunk("unbanip", &remove)?;
        self.each_chunk("banip", &add)?;
        Ok(Report::of(change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_banip_output() {
        // `fail2ban-client get nolist banip` (fail2ban 1.0.2).
        let got = parse_banip("198.18.0.9 198.18.5.0/24 2001:db8::1\n").unwrap();
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["198.18.0.9/32", "198.18.5.0/24", "2001:db8::1/128"]);
        assert!(parse_banip("\n").unwrap().is_empty());
        assert!(parse_banip("Sorry but the jail 'x' does not exist").is_err());
    }
}
