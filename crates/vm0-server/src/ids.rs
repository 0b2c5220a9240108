//! Resource ids: a type prefix and a ULID in lowercase, from one monotonic generator, so
//! that ids sort in creation order (keyset pagination orders by id).

use std::sync::Mutex;

use chrono::{DateTime, SubsecRound, Utc};

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A fresh id such as `ag_01j9z3…`.
pub(crate) fn new(prefix: &str) -> String {
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
