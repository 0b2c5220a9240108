//! Resource ids: a type prefix and a ULID in lowercase, from one monotonic generator, so
//! that ids sort in creation order (keyset pagination orders by id).

use std::sync::Mutex;

use chrono::{DateTime, SubsecRound, Utc};

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// What an id names, which its prefix says: every prefix is written here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    User,
    Token,
    Agent,
    AgentVersion,
    Volume,
    Artifact,
    /// An upload session of a volume or artifact.
    Upload,
    /// A file of an upload session.
    UploadFile,
    Run,
    Session,
    Checkpoint,
    /// A server instance, the executor of the runs it starts.
    Instance,
    /// A blob's temporary file while it is written.
    Partial,
    /// A blob's temporary copy while it is verified.
    Verifying,
}

impl Prefix {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Prefix::User => "usr",
            Prefix::Token => "tok",
            Prefix::Agent => "ag",
            Prefix::AgentVersion => "agv",
            Prefix::Volume => "vol",
            Prefix::Artifact => "art",
            Prefix::Upload => "upl",
            Prefix::UploadFile => "upf",
            Prefix::Run => "run",
            Prefix::Session => "sess",
            Prefix::Checkpoint => "chk",
            Prefix::Instance => "inst",
            Prefix::Partial => "part",
            Prefix::Verifying => "ver",
        }
    }
}

/// A fresh id such as `ag_01j9z3…`.
pub(crate) fn new(prefix: Prefix) -> String {
    let prefix = prefix.as_str();
    let mut generator = GENERATOR.lock().expect("the id generator is never poisoned");
    let ulid = generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new());
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

/// Whether `id` is an id of kind `prefix`, as `new` makes them: an id read from the
/// database is checked so before it names a file, since whoever can write the database
/// (a crafted backup, a shared PostgreSQL) must not choose paths on the host.
pub(crate) fn is(prefix: Prefix, id: &str) -> bool {
    id.strip_prefix(prefix.as_str()).and_then(|rest| rest.strip_prefix('_')).is_some_and(|ulid| {
        ulid.len() == 26 && ulid.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    })
}

/// Now, to the millisecond, as every timestamp of the API is.
pub(crate) fn now() -> DateTime<Utc> {
    // The fault suite puts an instance's clock off by this many seconds.
    fail::fail_point!("clock", |offset| {
        let offset = offset.and_then(|o| o.parse().ok()).unwrap_or(0);
        (Utc::now() + chrono::Duration::seconds(offset)).trunc_subsecs(3)
    });
    Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_checked_for_its_kind_and_shape() {
        let id = new(Prefix::Checkpoint);
        assert!(is(Prefix::Checkpoint, &id));
        assert!(!is(Prefix::Session, &id));
        for bad in ["/etc", "chk_../../../../etc/x", "chk_", "chk_01J9Z3", "chk/01j9z3"] {
            assert!(!is(Prefix::Checkpoint, bad), "{bad}");
        }
    }
}
