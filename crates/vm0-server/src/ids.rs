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

/// Now, to the millisecond, as every timestamp of the API is.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
