//! For test suites, which run every end-to-end test on each backend: the database and the
//! blob store a test server uses.

use std::path::Path;

use anyhow::Context;
use sqlx::{Connection, Executor};

/// The variable naming a PostgreSQL server the tests may create databases on, as an
/// administrator's URL (`cargo xtask ci` starts one and sets it).
pub const TEST_DATABASE_URL: &str = "VM0_TEST_DATABASE_URL";

/// The database URL for a test server over `data_dir`: `None` (SQLite in the data
/// directory) unless `VM0_TEST_DATABASE_URL` is set, and then a new PostgreSQL database
/// on that server, named `vm0_test_…`. It is remembered in the data directory, so that a
/// server restarted over it finds its database again. The databases are left for the
/// server's owner to drop, as a data directory's files are left in its temporary folder.
pub async fn database_url(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let Ok(admin) = std::env::var(TEST_DATABASE_URL) else { return Ok(None) };
    let remembered = data_dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return Ok(Some(url));
    }
    let name = format!("vm0_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut connection = sqlx::PgConnection::connect(&admin).await.with_context(|| {
        format!("connecting to {TEST_DATABASE_URL}={}", crate::store::redacted(&admin))
    })?;
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .with_context(|| format!("creating the database {name}"))?;
    connection.close().await.ok();
    // The same server and credentials, another database: the path after the authority.
    let (base, query) =
        admin.split_once('?').map_or((admin.as_str(), None), |(base, query)| (base, Some(query)));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let url = format!(
        "{}/{name}{}",
        &base[..authority_end],
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    tokio::fs::create_dir_all(data_dir).await?;
    tokio::fs::write(&remembered, &url).await?;
    Ok(Some(url))
}

/// The variable naming an S3 bucket the tests may store blobs in, `s3://BUCKET[/PREFIX]`.
pub const TEST_BLOB_STORE: &str = "VM0_TEST_BLOB_STORE";
/// The variable naming that bucket's endpoint (`cargo xtask ci` starts s3s-fs and sets both).
pub const TEST_S3_ENDPOINT: &str = "VM0_TEST_S3_ENDPOINT";

/// The blob store for a test server over `data_dir`: the data directory unless
/// `VM0_TEST_BLOB_STORE` names a bucket (`s3://BUCKET[/PREFIX]`, at the endpoint
/// `VM0_TEST_S3_ENDPOINT`), and then a prefix of its own in that bucket, remembered in
/// the data directory as the database is.
pub async fn blob_store(data_dir: &Path) -> anyhow::Result<crate::blobs::Location> {
    let Ok(bucket) = std::env::var(TEST_BLOB_STORE) else {
        return Ok(crate::blobs::Location::Local);
    };
    let remembered = data_dir.join("test-blob-store");
    let url = match std::fs::read_to_string(&remembered) {
        Ok(url) => url,
        Err(_) => {
            let url = format!(
                "{}/{}",
                bucket.trim_end_matches('/'),
                ulid::Ulid::new().to_string().to_lowercase()
            );
            tokio::fs::create_dir_all(data_dir).await?;
            tokio::fs::write(&remembered, &url).await?;
            url
        }
    };
    crate::blobs::Location::parse(&url, std::env::var(TEST_S3_ENDPOINT).ok())
        .map_err(anyhow::Error::msg)
}

/// A shell script that leaves in a run's working directory what a checkpoint keeps beside
/// its files' bytes: an executable script (mode 750), a symbolic link to it, an empty
/// folder (mode 700), and a link that leads outside the directory, which it leaves out.
pub const SHAPES: &str = "mkdir -p bin empty; printf '#!/bin/sh\\necho tool\\n' > bin/tool; \
     chmod 750 bin/tool; chmod 700 empty; ln -s bin/tool tool; ln -s /etc outside";

/// A shell script that prints `kept` when the working directory holds what `SHAPES` left
/// but the link outside, and `lost` otherwise.
pub const SHAPES_KEPT: &str = "[ \"$(stat -c %a bin/tool)\" = 750 ] && \
     [ \"$(stat -c %a empty)\" = 700 ] && [ -z \"$(ls -A empty)\" ] && \
     [ \"$(readlink tool)\" = bin/tool ] && [ \"$(./tool)\" = tool ] && \
     [ ! -e outside ] && [ ! -L outside ] && echo kept || echo lost";
