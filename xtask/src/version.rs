//! The semantic versions of the spec (`info.version`, releases, `x-since`), read by the
//! same rule as vm0-api reads a caller's `api-version`.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// A semantic version, as `info.version` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl FromStr for Version {
    type Err = anyhow::Error;

    /// Each number is digits with no leading zero, the rule by which vm0-api reads a
    /// caller's `api-version`: a version the spec names is one a caller can send.
    fn from_str(text: &str) -> Result<Version> {
        let parts: Vec<&str> = text.split('.').collect();
        let digits = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
        };
        let number =
            |i: usize| parts.get(i).filter(|p| digits(p)).and_then(|p| p.parse::<u64>().ok());
        match (parts.len(), number(0), number(1), number(2)) {
            (3, Some(major), Some(minor), Some(patch)) => Ok(Version { major, minor, patch }),
            _ => bail!("{text:?} is not a version of the form MAJOR.MINOR.PATCH"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
