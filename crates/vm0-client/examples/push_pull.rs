//! Pushes a directory to a volume (created if missing) and pulls it back into another
//! directory, with the time of each.
//!
//! ```sh
//! VM0_API_URL=… VM0_TOKEN=… \
//!     cargo run -p vm0-client --example push_pull -- VOLUME FROM_DIR TO_DIR
//! ```

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::path::Path;
use std::time::Instant;

use futures::TryStreamExt;
use vm0_client::{Client, Paginate, Transfer};

#[tokio::main]
async fn main() -> Result<(), vm0_client::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, from, to] = args.as_slice() else {
        eprintln!("usage: push_pull VOLUME FROM_DIR TO_DIR");
        std::process::exit(2);
    };
    let client = Client::from_env()?;
    let volumes: Vec<_> = client.list_volumes().stream().try_collect().await?;
    let id = match volumes.into_iter().find(|v| v.name.as_str() == name) {
        Some(volume) => volume.id,
        None => {
            client.create_volume().body_map(|b| b.name(name.as_str())).send().await?.into_inner().id
        }
    };
    let started = Instant::now();
    let version = client
        .push_volume(
            &id,
            Path::new(from),
            Some("pushed by the push_pull example"),
            &Transfer::default(),
        )
        .await?;
    let pushed = started.elapsed();
    let started = Instant::now();
    client.pull_volume(&id, Some(version.id.as_str()), Path::new(to), &Transfer::default()).await?;
    let pulled = started.elapsed();
    let mib = version.size as f64 / (1024.0 * 1024.0);
    println!("version {} of {name}: {} files, {mib:.1} MiB", version.id, version.file_count);
    println!("push: {:.2} s, {:.0} MiB/s", pushed.as_secs_f64(), mib / pushed.as_secs_f64());
    println!("pull: {:.2} s, {:.0} MiB/s", pulled.as_secs_f64(), mib / pulled.as_secs_f64());
    Ok(())
}
