//! What runs say, written in batches and fed to their subscribers from memory.
//!
//! Every event, log entry and metrics sample of every run goes through one bounded
//! channel to one writer task. The writer numbers them, stores whatever has gathered in
//! one transaction (flushed by size, or a few milliseconds after the first entry), and
//! only then publishes the events to the run's live subscribers: an event a subscriber
//! sees is always one it can replay from the store after a reconnect. A run of 100,000
//! lines costs a few dozen commits, not 200,000, and a full channel slows the run's
//! output down rather than the server's memory growing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use vm0_api::SentEvent;
use vm0_types::{self as types, LogLevel, LogType};

use crate::ids;
use crate::store::{event_row, Batch, Counters, EventData, LogRow, MetricRow, RunStore};

/// Entries waiting to be written, at most.
const QUEUE: usize = 8192;
/// Entries written in one transaction, at most.
const MAX_BATCH: usize = 4096;
/// The first wait before storing a batch again, doubling up to `RETRY_AT_MOST`.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_AT_MOST: Duration = Duration::from_secs(2);
/// How long the store may refuse records before each try is logged as an error.
const RETRY_QUIETLY: Duration = Duration::from_secs(30);
/// Events a live subscriber may fall behind by before it replays from the store.
const FEED_CAPACITY: usize = 1024;

enum Entry {
    /// Something a run recorded, with the epoch its executor holds it under.
    Record(Arc<str>, i64, Record),
    /// Answered once everything sent before it is stored.
    Flush(oneshot::Sender<()>),
}

enum Record {
    Event(EventData),
    Log(LogRow),
    Metric(MetricRow),
}

/// The sending side of the writer, shared by every run.
#[derive(Clone)]
pub(super) struct Recorder {
    queue: mpsc::Sender<Entry>,
    feeds: Arc<Feeds>,
}

impl Recorder {
    /// Starts the writer over `store`.
    pub(super) fn start<S: RunStore + Send + Sync + 'static>(store: S) -> Recorder {
        let (queue, entries) = mpsc::channel(QUEUE);
        let feeds = Arc::new(Feeds::default());
        tokio::spawn(write(store, entries, feeds.clone()));
        Recorder { queue, feeds }
    }

    /// What run `run_id`, executing here under `epoch`, records, with the values of
    /// `secrets` masked.
    pub(super) fn journal(&self, run_id: &str, epoch: i64, secrets: Vec<String>) -> Journal {
        Journal {
            run: run_id.into(),
            epoch,
            secrets: Masker::new(secrets),
            recorder: self.clone(),
            carries: Mutex::default(),
        }
    }

    /// The live events of a run, from the moment of the call.
    pub(super) fn subscribe(&self, run_id: &str) -> Subscription {
        self.feeds.subscribe(run_id)
    }

    /// Whether the run has live subscribers here.
    pub(super) fn watched(&self, run_id: &str) -> bool {
        self.feeds.senders.lock().expect("not poisoned").contains_key(run_id)
    }

    /// The last events of a run that has ended, stored with its end, for this instance's
    /// subscribers; then its feed closes, and a subscriber that missed some replays them
    /// from the store.
    pub(super) fn ended(&self, run_id: &str, events: Vec<types::RunEvent>) {
        let run: Arc<str> = run_id.into();
        self.feeds.publish(events.into_iter().map(|e| (run.clone(), e)).collect());
        self.feeds.close(run_id);
    }

    /// Events another instance recorded and stored, for this instance's subscribers; the
    /// run's feed closes after `complete`.
    pub(super) fn relay(&self, run_id: &str, events: Vec<types::RunEvent>) {
        let ended = events.iter().any(|e| matches!(e, types::RunEvent::Complete { .. }));
        let run: Arc<str> = run_id.into();
        self.feeds.publish(events.into_iter().map(|e| (run.clone(), e)).collect());
        if ended {
            self.feeds.close(run_id);
        }
    }
}

/// One run's pen: everything it writes is masked, numbered and stored in order.
pub(crate) struct Journal {
    run: Arc<str>,
    /// The epoch of the claim the run executes under: the store refuses what it records
    /// once the run has ended or been claimed again.
    epoch: i64,
    secrets: Masker,
    recorder: Recorder,
    /// The end of what the run printed so far on standard output and on standard error,
    /// for `Masker::mask_line`.
    carries: Mutex<[String; 2]>,
}

impl Journal {
    async fn send(&self, entry: Entry) {
        if self.recorder.queue.send(entry).await.is_err() {
            tracing::error!(run = %self.run, "the run recorder has stopped");
        }
    }

    /// An event; its data's strings masked.
    pub(crate) async fn event(&self, data: EventData) {
        let data = match data {
            EventData::Output(e) => EventData::Output(types::RunOutputData {
                content: self.secrets.mask(&e.content),
                ..e
            }),
            EventData::Error(e) => {
                EventData::Error(types::RunErrorData { message: self.secrets.mask(&e.message) })
            }
            other => other,
        };
        self.send(Entry::Record(self.run.clone(), self.epoch, Record::Event(data))).await;
    }

    /// One line the run printed, as an output event and an agent log entry, with its
    /// secrets masked, also those that a line break cut in two.
    pub(crate) async fn output(&self, stderr: bool, line: &str) {
        let text = {
            let mut carries = self.carries.lock().expect("no panic while masking");
            self.secrets.mask_line(&mut carries[usize::from(stderr)], line)
        };
        let (level, stream) = if stderr {
            (LogLevel::Warn, types::OutputStream::Stderr)
        } else {
            (LogLevel::Info, types::OutputStream::Stdout)
        };
        self.event(EventData::Output(types::RunOutputData { content: text.clone(), stream })).await;
        let metadata =
            [(LogRow::STREAM.to_string(), Value::String(stream.to_string()))].into_iter().collect();
        self.log(LogType::Agent, level, &text, metadata).await;
    }

    /// A log entry; its message and metadata masked.
    pub(crate) async fn log(
        &self,
        kind: LogType,
        level: LogLevel,
        message: &str,
        metadata: Map<String, Value>,
    ) {
        let metadata = metadata.into_iter().map(|(k, v)| (k, self.secrets.mask_value(v))).collect();
        let row = LogRow {
            seq: 0,
            timestamp: ids::now(),
            kind,
            level,
            message: self.secrets.mask(message),
            metadata: sqlx::types::Json(metadata),
        };
        self.send(Entry::Record(self.run.clone(), self.epoch, Record::Log(row))).await;
    }

    pub(crate) async fn metric(&self, sample: MetricRow) {
        self.send(Entry::Record(self.run.clone(), self.epoch, Record::Metric(sample))).await;
    }

    /// Returns once everything this journal (and every other) sent so far is stored.
    pub(crate) async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        self.send(Entry::Flush(done)).await;
        stored.await.ok();
    }

    /// `text` with the run's secrets masked.
    pub(crate) fn mask(&self, text: &str) -> String {
        self.secrets.mask(text)
    }
}

/// The shortest beginning of a secret at the end of a line that is masked.
const MIN_FRAGMENT: usize = 4;

/// Replaces the values of a run's secrets with `***`.
pub(super) struct Masker {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Masker {
    pub(super) fn new(mut secrets: Vec<String>) -> Masker {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Masker { secrets }
    }

    pub(super) fn mask(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// `line` masked as [`Masker::mask`] does, and also where a secret begins at its end
    /// or ends at its start, cut by a line break: `carry` holds the end of the lines
    /// before (of the stream the line is of), and is updated. A secret's beginning at a
    /// line's end is masked from its fourth byte on, as the next line may complete it (so
    /// at most 3 bytes of a secret cut in two are shown); its end is masked on the next
    /// line, which completes it.
    pub(super) fn mask_line(&self, carry: &mut String, line: &str) -> String {
        let Some(longest) = self.secrets.first().map(String::len) else { return line.to_string() };
        let joined = format!("{carry}{line}");
        let start = carry.len();
        let mut hidden = vec![false; line.len()];
        let mut hide = |from: usize, to: usize| {
            hidden[from.max(start) - start..to - start].iter_mut().for_each(|h| *h = true)
        };
        for secret in &self.secrets {
            for (at, _) in joined.match_indices(secret.as_str()) {
                if at + secret.len() > start {
                    hide(at, at + secret.len());
                }
            }
            let begun = (MIN_FRAGMENT..secret.len()).rev().find(|&n| {
                n <= joined.len()
                    && secret.is_char_boundary(n)
                    && joined.is_char_boundary(joined.len() - n)
                    && joined.ends_with(&secret[..n])
            });
            if let Some(n) = begun {
                hide(joined.len() - n, joined.len());
            }
        }
        let mut keep = joined.len().saturating_sub(longest - 1);
        while !joined.is_char_boundary(keep) {
            keep += 1;
        }
        *carry = joined[keep..].to_string();
        let mut masked = String::with_capacity(line.len());
        for (at, c) in line.char_indices() {
            match (hidden[at], at > 0 && hidden[at - 1]) {
                (true, true) => {}
                (true, false) => masked.push_str("***"),
                (false, _) => masked.push(c),
            }
        }
        masked
    }

    fn mask_value(&self, value: Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.mask(&text)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.mask_value(v)).collect())
            }
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, self.mask_value(v))).collect())
            }
            other => other,
        }
    }
}

/// The records of one batch numbered after what the store holds for each run, read for
/// each batch. The batch, fenced by each run's epoch, and the events to publish once it
/// is stored; `None` when the counters cannot be read.
async fn number<S: RunStore>(
    store: &S,
    records: &[(Arc<str>, i64, Record)],
) -> Option<(Batch, Vec<(Arc<str>, types::RunEvent)>)> {
    let mut counters: HashMap<Arc<str>, Counters> = HashMap::new();
    let (mut batch, mut published) = (Batch::default(), Vec::new());
    for (run, epoch, record) in records {
        let fence = (run.to_string(), *epoch);
        if !batch.fences.contains(&fence) {
            batch.fences.push(fence);
        }
        let count = match counters.get_mut(run) {
            Some(count) => count,
            None => match store.counters(run).await {
                Ok(loaded) => counters.entry(run.clone()).or_insert(loaded),
                Err(error) => {
                    tracing::warn!(%run, %error, "could not read a run's counters");
                    return None;
                }
            },
        };
        match record {
            Record::Event(data) => {
                count.event += 1;
                let event = data.clone().numbered(count.event);
                batch.events.push((run.to_string(), event_row(&event)));
                published.push((run.clone(), event));
            }
            Record::Log(row) => {
                count.log += 1;
                batch.logs.push((run.to_string(), LogRow { seq: count.log, ..row.clone() }));
            }
            Record::Metric(sample) => {
                count.metric += 1;
                batch.metrics.push((run.to_string(), count.metric, sample.clone()));
            }
        }
    }
    Some((batch, published))
}

/// Numbers and stores a batch's records, trying again until the store takes them (a
/// busy or full disk, a database failing over), so
/// that no fault loses what a run said: the runs wait meanwhile, their channel full and
/// their output held in their pipes, and memory stays bounded. The events to publish.
async fn store_records<S: RunStore>(
    store: &S,
    records: &[(Arc<str>, i64, Record)],
) -> Vec<(Arc<str>, types::RunEvent)> {
    let mut delay = RETRY_FIRST;
    let mut failing_since: Option<std::time::Instant> = None;
    // Numbered once: the fences leave each run one writer, this one, so the numbers stay
    // right across tries, and a try whose commit went through with its answer lost shows
    // as the next try's duplicate.
    let mut numbered = None;
    loop {
        if numbered.is_none() {
            numbered = number(store, records).await;
        }
        if let Some((batch, published)) = &mut numbered {
            match store.append(batch).await {
                Ok(refused) => {
                    if let Some(since) = failing_since {
                        tracing::info!(after = ?since.elapsed(), "run records stored again");
                    }
                    // Their executor lost them (ended elsewhere, or claimed again): what
                    // they said since is not theirs to record, and their executor stops
                    // them at its next look.
                    for run in &refused {
                        tracing::warn!(%run, "refused: records of a run no longer held here");
                    }
                    published.retain(|(run, _)| !refused.iter().any(|r| **r == **run));
                    return std::mem::take(published);
                }
                Err(error) if error.is_duplicate() => {
                    tracing::info!("run records stored by a try whose answer was lost");
                    return std::mem::take(published);
                }
                Err(error) => {
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    let entries = batch.len();
                    if since.elapsed() < RETRY_QUIETLY {
                        tracing::warn!(%error, entries, ?delay, "could not store run records")
                    } else {
                        let failing = since.elapsed();
                        tracing::error!(%error, entries, ?failing, "could not store run records")
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_AT_MOST);
    }
}

/// The writer: numbers, stores and publishes the entries in batches. A batch is what
/// came while the one before was being stored, and it is stored at once: under load the
/// batches grow by themselves, and a lone line is not held back (waiting 5 ms for more
/// was a third of a one-line run's time to its first output).
async fn write<S: RunStore>(store: S, mut entries: mpsc::Receiver<Entry>, feeds: Arc<Feeds>) {
    let mut gathered = Vec::with_capacity(MAX_BATCH);
    loop {
        if entries.recv_many(&mut gathered, MAX_BATCH).await == 0 {
            return;
        }
        let (mut records, mut flushed) = (Vec::with_capacity(gathered.len()), Vec::new());
        for entry in gathered.drain(..) {
            match entry {
                Entry::Record(run, epoch, record) => records.push((run, epoch, record)),
                Entry::Flush(done) => flushed.push(done),
            }
        }
        if !records.is_empty() {
            feeds.publish(store_records(&store, &records).await);
        }
        for done in flushed {
            done.send(()).ok();
        }
    }
}

/// One run's live events.
type Feed = broadcast::Sender<Arc<SentEvent>>;

/// The live subscribers of each run. Each run's channel has a generation, so that a
/// subscription only ever removes the channel it belongs to.
#[derive(Default)]
struct Feeds {
    senders: Mutex<HashMap<String, (u64, Feed)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Feeds {
    fn subscribe(self: &Arc<Self>, run: &str) -> Subscription {
        let mut senders = self.senders.lock().expect("not poisoned");
        let (generation, sender) = senders.entry(run.to_string()).or_insert_with(|| {
            let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (generation, broadcast::channel(FEED_CAPACITY).0)
        });
        Subscription {
            run: run.to_string(),
            generation: *generation,
            events: sender.subscribe(),
            feeds: self.clone(),
        }
    }

    fn publish(&self, events: Vec<(Arc<str>, types::RunEvent)>) {
        let senders = self.senders.lock().expect("not poisoned");
        for (run, event) in events {
            if let Some((_, sender)) = senders.get(&*run) {
                sender.send(SentEvent::new(event)).ok();
            }
        }
    }

    /// The run has ended: its subscribers get what was published, then the end.
    fn close(&self, run: &str) {
        self.senders.lock().expect("not poisoned").remove(run);
    }
}

/// A subscriber's live view of one run's events.
pub(super) struct Subscription {
    run: String,
    generation: u64,
    pub events: broadcast::Receiver<Arc<SentEvent>>,
    feeds: Arc<Feeds>,
}

impl Subscription {
    /// A fresh subscription to the same run, as after the run's feed was closed.
    pub(super) fn renew(&self) -> Subscription {
        self.feeds.subscribe(&self.run)
    }
}

impl Drop for Subscription {
    /// The last subscriber of a run takes its feed with it, so feeds never pile up.
    fn drop(&mut self) {
        let mut senders = self.feeds.senders.lock().expect("not poisoned");
        if senders.get(&self.run).is_some_and(|(generation, sender)| {
            *generation == self.generation && sender.receiver_count() <= 1
        }) {
            senders.remove(&self.run);
        }
    }
}

/// A log entry's metadata of string values.
pub(super) fn meta<const N: usize>(pairs: [(&str, &str); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()
}

/// A status change as an event.
pub(super) fn status_event(status: types::RunStatus) -> EventData {
    EventData::Status(types::RunStatusData { status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_replaces_every_secret_longest_first() {
        let masker = Masker::new(vec!["abc".into(), "abcdef".into(), String::new()]);
        assert_eq!(masker.mask("x abcdef y abc z"), "x *** y *** z");
        assert_eq!(masker.mask("nothing here"), "nothing here");
        let value = masker.mask_value(serde_json::json!({"a": ["abc", 1], "b": {"c": "abcdef!"}}));
        assert_eq!(value, serde_json::json!({"a": ["***", 1], "b": {"c": "***!"}}));
    }

    /// The lines masked one after the other, as one stream.
    fn mask_lines(masker: &Masker, lines: &[&str]) -> Vec<String> {
        let mut carry = String::new();
        lines.iter().map(|line| masker.mask_line(&mut carry, line)).collect()
    }

    #[test]
    fn a_secret_cut_by_a_line_break_is_masked_on_both_lines() {
        let masker = Masker::new(vec!["s3cr3t-t0ken-value".into()]);
        assert_eq!(
            mask_lines(&masker, &["token: s3cr3t-t0", "ken-value and more"]),
            ["token: ***", "*** and more"]
        );
        assert_eq!(mask_lines(&masker, &["a s3cr3t-t0ken-value b", "plain"]), ["a *** b", "plain"]);
        // Cut in three, and cut after three bytes: at most three bytes show.
        assert_eq!(mask_lines(&masker, &["s3cr3t", "-t0ken", "-value!"]), ["***", "***", "***!"]);
        assert_eq!(mask_lines(&masker, &["x s3c", "r3t-t0ken-value"]), ["x s3c", "***"]);
        // A line that only looks like a secret's beginning is masked from its fourth byte.
        assert_eq!(
            mask_lines(&masker, &["ends in s3cr", "something else"]),
            ["ends in ***", "something else"]
        );
        // Many bytes, not characters: a multibyte text around the cut.
        let masker = Masker::new(vec!["ключ-секрет".into()]);
        assert_eq!(mask_lines(&masker, &["é ключ-с", "екрет é"]), ["é ***", "*** é"]);
    }

    #[test]
    fn an_empty_secret_masks_nothing() {
        assert_eq!(Masker::new(vec![String::new()]).mask("text"), "text");
    }

    #[test]
    fn metadata_is_strings() {
        assert_eq!(
            Value::Object(meta([("a", "1"), ("b", "x")])),
            serde_json::json!({"a": "1", "b": "x"})
        );
    }
}
