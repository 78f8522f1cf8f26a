//! Enforcement: makes the firewall match the bans in the store. The store
//! is the truth; each reconcile adds what is missing, removes what is
//! stray, and rebuilds nolist's own table if someone flushed it. Only this
//! module runs system commands.

pub mod nft;

use ipnet::IpNet;

/// One ban to enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Address or network.
    pub net: IpNet,
    /// Seconds until it expires (the kernel drops it then, daemon or not).
    pub remaining: u64,
}

/// What one reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Elements added.
    pub added: usize,
    /// Stray elements removed.
    pub removed: usize,
    /// True when nolist's table had to be (re)created.
    pub rebuilt: bool,
}

/// Why enforcement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The tool could not be run at all.
    #[error(
        "cannot run {tool}: {source} (is it installed, and is nolist running as root or with CAP_NET_ADMIN?)"
    )]
    Spawn {
        /// The command.
        tool: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("{tool} failed: {stderr}")]
    Failed {
        /// The command.
        tool: String,
        /// Its error output.
        stderr: String,
    },
    /// Its output was not what we expected.
    #[error("cannot read {tool}'s output: {message}")]
    Output {
        /// The command.
        tool: String,
        /// What was wrong.
        message: String,
    },
}
