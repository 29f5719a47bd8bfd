//! The index of the head's log rows: an in-memory tantivy index fed by an indexer thread.
//!
//! The WAL writer hands every acknowledged `logs` batch to the indexer with its head
//! sequence number; the indexer adds the rows and commits at least every
//! [`COMMIT_EVERY`], so a row is searchable well within a second of its
//! acknowledgement. Documents of batches that a flush moved into Parquet are deleted
//! lazily; until then searches skip them by sequence number (see
//! [`super::search::Collect::min_head_seq`]), so no row is ever counted twice.
//!
//! Live tail rides on the same commits: after each one the indexer runs every
//! subscriber's query over just the rows that commit added and sends the matching rows.

use std::collections::{BTreeSet, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tantivy::query::{Query, RangeQuery};
use tantivy::schema::Term;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};
use tracing::warn;

use super::fields::{LogColumns, LogFields};
use super::queue::QueueBudget;
use super::search::Collect;
use crate::error::Result;

/// Longest time a new row waits before the indexer commits it.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// Longest a flush waits for the indexer to catch up before it indexes its rows itself.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Most matching rows one tail message carries.
const TAIL_LIMIT: usize = 10_000;

enum Message {
    /// A batch, its sequence number and its bytes in the queue.
    Batch(u64, RecordBatch, u64),
    Release(u64),
    /// Commit once every batch up to this sequence number is added, then answer whether
    /// every batch from the first number on was indexed.
    Sync(RangeInclusive<u64>, Sender<bool>),
}

struct Subscriber {
    query: Box<dyn Query>,
    /// Rows of batches below this sequence were acknowledged before the subscription.
    from_seq: u64,
    sender: tokio::sync::mpsc::Sender<RecordBatch>,
}

/// Handle to the head's log index; cheap to clone.
#[derive(Clone)]
pub struct HeadIndex {
    index: Index,
    reader: IndexReader,
    sender: Sender<Message>,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    queue: Arc<QueueBudget>,
}

impl std::fmt::Debug for HeadIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadIndex").finish_non_exhaustive()
    }
}

impl HeadIndex {
    /// Creates the index and starts its indexer thread, which buffers up to `memory`
    /// bytes of new documents (between 15 MB and 64 MiB) before it writes a segment.
    /// At most `memory` bytes of batches wait for the indexer (see [`HeadIndex::add`]);
    /// their size is published on `queue_bytes` and waits for room counted in
    /// `queue_waits`.
    ///
    /// # Errors
    /// When tantivy cannot create the writer or the thread cannot start.
    pub(crate) fn start(
        fields: LogFields,
        memory: usize,
        queue_bytes: prometheus_client::metrics::gauge::Gauge,
        queue_waits: prometheus_client::metrics::counter::Counter,
    ) -> Result<HeadIndex> {
        let index = Index::create_in_ram(fields.schema.clone());
        LogFields::register_tokenizers(&index);
        let writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, super::file::writer_memory(memory))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let (sender, receiver) = channel();
        let subscribers = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(QueueBudget::new(memory as u64, queue_bytes, queue_waits));
        let head = HeadIndex {
            index: index.clone(),
            reader,
            sender,
            subscribers: Arc::clone(&subscribers),
            queue: Arc::clone(&queue),
        };
        let indexer = Indexer {
            fields,
            writer,
            reader: head.reader.clone(),
            subscribers,
            pending: VecDeque::new(),
            queue,
            added: None,
            failed: BTreeSet::new(),
            syncs: Vec::new(),
        };
        std::thread::Builder::new()
            .name("periscope-log-index".into())
            .spawn(move || indexer.run(receiver))
            .map_err(crate::error::Error::io("start log indexer thread", "."))?;
        Ok(head)
    }

    /// Queues an acknowledged batch for indexing; waits while the batches queued before
    /// it fill the queue's byte budget.
    pub(crate) fn add(&self, seq: u64, batch: RecordBatch) {
        let bytes = crate::schema::batch_bytes(&batch);
        self.queue.take(bytes);
        if self.sender.send(Message::Batch(seq, batch, bytes)).is_err() {
            self.queue.give(bytes);
        }
    }

    /// Waits until every batch with a sequence number in `seqs` is indexed and committed
    /// (at most [`SYNC_TIMEOUT`]); true when all of them were indexed, so that the head
    /// index holds every row of those batches (see [`super::export`]).
    pub(crate) fn sync(&self, seqs: RangeInclusive<u64>) -> bool {
        let (reply, answer) = channel();
        if self.sender.send(Message::Sync(seqs, reply)).is_err() {
            return false;
        }
        answer.recv_timeout(SYNC_TIMEOUT).unwrap_or(false)
    }

    /// The index itself, to copy a flushed part's documents from (after [`Self::sync`]).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Says that every batch below `seq` is now in Parquet files.
    pub(crate) fn release_below(&self, seq: u64) {
        let _ = self.sender.send(Message::Release(seq));
    }

    /// The current searcher; combine with the head's minimum sequence (see the module
    /// documentation).
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Subscribes to new rows matching `query`: after each commit of the indexer, the
    /// matching rows it added arrive as one batch. The subscription ends when the
    /// receiver is dropped; when the receiver falls more than `capacity` messages behind,
    /// rows are dropped rather than buffered without bound.
    /// Only rows of batches from sequence `from_seq` on are sent.
    pub(crate) fn subscribe(
        &self,
        query: Box<dyn Query>,
        from_seq: u64,
        capacity: usize,
    ) -> tokio::sync::mpsc::Receiver<RecordBatch> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        self.subscribers.lock().push(Subscriber {
            query,
            from_seq,
            sender,
        });
        receiver
    }
}

struct Indexer {
    fields: LogFields,
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    /// Batches added since the last commit, for the tail subscribers.
    pending: VecDeque<(u64, RecordBatch)>,
    queue: Arc<QueueBudget>,
    /// The highest sequence number added.
    added: Option<u64>,
    /// Sequence numbers of batches that could not be indexed (until flushed).
    failed: BTreeSet<u64>,
    /// Syncs waiting for batches still to come.
    syncs: Vec<(RangeInclusive<u64>, Sender<bool>)>,
}

impl Indexer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut dirty_since: Option<Instant> = None;
        loop {
            let wait = match dirty_since {
                Some(t) => COMMIT_EVERY.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match receiver.recv_timeout(wait) {
                Ok(Message::Batch(seq, batch, bytes)) => {
                    if let Err(error) = self.add(seq, &batch) {
                        warn!(%error, "Could not index a log batch; it stays queryable by SQL.");
                        self.failed.insert(seq);
                    }
                    self.added = Some(self.added.map_or(seq, |a| a.max(seq)));
                    self.queue.give(bytes);
                    self.pending.push_back((seq, batch));
                    dirty_since.get_or_insert_with(Instant::now);
                }
                Ok(Message::Sync(seqs, reply)) => self.syncs.push((seqs, reply)),
                Ok(Message::Release(seq)) => {
                    let query = RangeQuery::new(
                        std::ops::Bound::Unbounded,
                        std::ops::Bound::Excluded(Term::from_field_u64(
                            self.fields.locator,
                            seq << 32,
                        )),
                    );
                    if let Err(error) = self.writer.delete_query(Box::new(query)) {
                        warn!(%error, "Could not drop flushed rows from the head log index.");
                    }
                    self.failed = self.failed.split_off(&seq);
                    dirty_since.get_or_insert_with(Instant::now);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let ready = self
                .syncs
                .iter()
                .any(|(seqs, _)| self.added.is_some_and(|a| a >= *seqs.end()));
            if ready || dirty_since.is_some_and(|t| t.elapsed() >= COMMIT_EVERY) {
                let committed = self.commit();
                dirty_since = None;
                self.answer_syncs(committed);
            }
        }
    }

    /// Answers the syncs whose batches are all added, after a commit (`committed` false
    /// when it failed: those answer that the index is incomplete).
    fn answer_syncs(&mut self, committed: bool) {
        let added = self.added;
        let failed = &self.failed;
        self.syncs.retain(|(seqs, reply)| {
            if added.is_none_or(|a| a < *seqs.end()) {
                return true;
            }
            let complete = committed && failed.range(seqs.clone()).next().is_none();
            let _ = reply.send(complete);
            false
        });
    }

    fn add(&mut self, seq: u64, batch: &RecordBatch) -> Result<()> {
        let cols = LogColumns::of(batch)?;
        for row in 0..batch.num_rows() {
            let doc = self.fields.document(&cols, row, (seq << 32) | row as u64);
            self.writer.add_document(doc)?;
        }
        Ok(())
    }

    /// Commits what was added and runs the tail subscriptions over it; false when the
    /// commit failed.
    fn commit(&mut self) -> bool {
        if let Err(error) = self.writer.commit().and_then(|_| self.reader.reload()) {
            warn!(%error, "Could not commit the head log index.");
            return false;
        }
        let pending: Vec<(u64, RecordBatch)> = self.pending.drain(..).collect();
        if pending.is_empty() {
            return true;
        }
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|s| !s.sender.is_closed());
        if subscribers.is_empty() {
            return true;
        }
        let searcher = self.reader.searcher();
        let first = pending[0].0;
        for sub in subscribers.iter() {
            match tail_rows(
                &searcher,
                sub.query.as_ref(),
                first.max(sub.from_seq),
                &pending,
            ) {
                Ok(Some(rows)) => {
                    let _ = sub.sender.try_send(rows);
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "Live tail query failed."),
            }
        }
        true
    }
}

/// The rows of `pending` (batches from sequence `first` on) that `query` matches, in
/// arrival order.
fn tail_rows(
    searcher: &Searcher,
    query: &dyn Query,
    first: u64,
    pending: &[(u64, RecordBatch)],
) -> Result<Option<RecordBatch>> {
    let collect = Collect {
        start: i64::MIN,
        end: i64::MAX,
        limit: TAIL_LIMIT,
        before: None,
        histogram: None,
        min_head_seq: Some(first),
        rows_are_docs: false,
    };
    let found = searcher.search(query, &collect)?;
    if found.hits.is_empty() {
        return Ok(None);
    }
    let mut locators: Vec<u64> = found.hits.iter().map(|h| h.locator).collect();
    locators.sort_unstable();
    let mut parts = Vec::new();
    for (seq, batch) in pending.iter().filter(|(seq, _)| *seq >= first) {
        let rows: Vec<u32> = locators
            .iter()
            .filter(|l| *l >> 32 == *seq)
            .map(|l| (*l & 0xFFFF_FFFF) as u32)
            .collect();
        if !rows.is_empty() {
            parts.push(take_record_batch(batch, &UInt32Array::from(rows))?);
        }
    }
    let schema = crate::schema::Signal::Logs.schema();
    Ok(Some(arrow::compute::concat_batches(&schema, &parts)?))
}
