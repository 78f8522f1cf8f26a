//! The one error type of the provider boundary.

/// Why a provider could not read or change a zone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider refused the credentials (HTTP 401/403, TSIG BADKEY/BADSIG).
    #[error("credentials rejected by {provider}: {message}")]
    Credentials {
        /// Which provider.
        provider: String,
        /// What it said.
        message: String,
    },
    /// The zone does not exist at the provider (HTTP 404, NOTAUTH/NOTZONE, no zone file).
    #[error("zone {zone} not found at {provider}: {message}")]
    ZoneMissing {
        /// Which provider.
        provider: String,
        /// The zone.
        zone: String,
        /// What it said.
        message: String,
    },
    /// The provider refused the change or request as invalid.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        /// Which provider.
        provider: String,
        /// What it said.
        message: String,
    },
    /// The provider failed (5xx after the retries, a DNS error code).
    #[error("{provider} failed: {message}")]
    Failed {
        /// Which provider.
        provider: String,
        /// What it said.
        message: String,
    },
    /// The provider could not be reached, or did not answer in time.
    #[error("cannot reach {provider}: {message}")]
    Unreachable {
        /// Which provider.
        provider: String,
        /// The transport error.
        message: String,
    },
    /// The provider answered something this crate does not understand.
    #[error("unexpected answer from {provider}: {message}")]
    Protocol {
        /// Which provider.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// A secret (token, API key, TSIG key) could not be read.
    #[error("{0}")]
    Secret(String),
    /// A local file (zone file, key file) could not be read, parsed or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}
