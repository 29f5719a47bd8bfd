//! The durable outbox: notifications waiting for delivery, what was delivered, dead
//! letters, and the alert state, in one append-only journal that is fsynced before
//! anything is sent.
//!
//! One evaluation's new notifications and the state they came from are written in one
//! append, so after a crash either both are there or neither is: a restart neither
//! re-sends what was queued nor forgets what was due. Each line is
//! `<crc32 hex> <json>`; a torn last line fails its checksum and is cut off on replay.
//!
//! Appends are serialized: a writer holds the journal file for its whole append (write,
//! fsync, then the in-memory queues), so records land in the order they were made. The
//! in-memory side has a lock of its own that is never held across I/O, so readers (the
//! API, the delivery workers looking for work) never wait for an fsync. The engine and
//! the delivery workers write through [`Outbox::spawn_commit`] and
//! [`Outbox::finish_blocking`], which run the append on a blocking thread.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Rewrite the journal once it is larger than this.
const COMPACT_BYTES: u64 = 8 << 20;
/// Delivered notifications remembered for the API.
const HISTORY: usize = 200;
/// Dead letters remembered for the API.
const DEAD_LETTERS: usize = 1000;

/// A notification to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Sequence number, unique in this data directory.
    pub id: u64,
    /// The target: `webhook/<name>` or `alertmanager/<url>`.
    pub target: String,
    /// When it was queued, Unix ms.
    pub created: i64,
    /// One line saying what it is about.
    pub summary: String,
    /// The request body, exactly as it will be sent (and signed).
    pub body: String,
}

/// A delivered or dead notification, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The notification (body included).
    pub notification: Notification,
    /// When it was delivered or given up, Unix ms.
    pub at: i64,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up (dead letters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    /// One evaluation: its notifications and the state they came from, in one line so
    /// that a torn write keeps both or neither.
    Commit {
        ns: Vec<Notification>,
        state: Option<serde_json::Value>,
    },
    State {
        state: serde_json::Value,
    },
    Enqueue {
        n: Notification,
    },
    Done {
        id: u64,
        at: i64,
        attempts: u32,
    },
    Dead {
        id: u64,
        at: i64,
        attempts: u32,
        error: String,
    },
    /// Taken off the queue unsent: a newer Alertmanager batch replaces it.
    Dropped {
        id: u64,
    },
    History {
        o: Outcome,
    },
    /// The next id to give out (written by compaction, which may drop the highest).
    NextId {
        id: u64,
    },
}

/// Targets whose queued notifications a newer one replaces: Alertmanager gets every
/// alert again each resend delay, so only the newest batch matters (as in Prometheus,
/// which drops batches it cannot send).
fn superseded_by_newer(target: &str) -> bool {
    target.starts_with("alertmanager/")
}

/// The journal file. Whoever appends holds it for the whole append.
struct Journal {
    file: File,
    path: PathBuf,
    bytes: u64,
}

/// What the journal holds, kept in memory for readers. Changed only by a writer that
/// holds the [`Journal`] (after its append is durable); its lock is never held across
/// I/O.
struct Memory {
    next_id: u64,
    state: Option<serde_json::Value>,
    queues: BTreeMap<String, VecDeque<Notification>>,
    history: VecDeque<Outcome>,
    dead: VecDeque<Outcome>,
}

/// Runs just before a commit's append, on the thread that appends (tests only).
#[cfg(test)]
type AppendHook = Arc<dyn Fn() + Send + Sync>;

/// The outbox. Cheap to share behind an `Arc`.
///
/// Lock order: `journal`, then `memory`.
pub struct Outbox {
    journal: Mutex<Journal>,
    memory: Mutex<Memory>,
    wake: Mutex<BTreeMap<String, Arc<Notify>>>,
    #[cfg(test)]
    before_append: Mutex<Option<AppendHook>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

fn encode(record: &Record) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(record)?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

fn decode(line: &str) -> Option<Record> {
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (crc32fast::hash(json.as_bytes()) == crc)
        .then(|| serde_json::from_str(json).ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A blocking journal operation's result, or why its thread did not finish it.
pub(crate) fn joined<T>(
    r: Result<std::io::Result<T>, tokio::task::JoinError>,
) -> std::io::Result<T> {
    r.map_err(|e| std::io::Error::other(format!("the journal write did not finish: {e}")))?
}

impl Outbox {
    /// Opens (or creates) the journal in `dir` and replays it.
    ///
    /// # Errors
    /// When the directory or file cannot be created, read or truncated.
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal");
        let created = !path.exists();
        let mut journal = Journal {
            file: OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?,
            path: path.clone(),
            bytes: 0,
        };
        let mut memory = Memory {
            next_id: 1,
            state: None,
            queues: BTreeMap::new(),
            history: VecDeque::new(),
            dead: VecDeque::new(),
        };
        let mut pending: BTreeMap<u64, Notification> = BTreeMap::new();
        let mut good = 0u64;
        let mut reader = BufReader::new(File::open(&path)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let Some(record) = std::str::from_utf8(&line[..n - 1]).ok().and_then(decode) else {
                break;
            };
            good += n as u64;
            match record {
                Record::Commit { ns, state } => {
                    for n in ns {
                        memory.next_id = memory.next_id.max(n.id + 1);
                        pending.insert(n.id, n);
                    }
                    if state.is_some() {
                        memory.state = state;
                    }
                }
                Record::State { state } => memory.state = Some(state),
                Record::Enqueue { n } => {
                    memory.next_id = memory.next_id.max(n.id + 1);
                    pending.insert(n.id, n);
                }
                Record::Dropped { id } => {
                    pending.remove(&id);
                }
                Record::NextId { id } => memory.next_id = memory.next_id.max(id),
                Record::Done { id, at, attempts } => {
                    if let Some(n) = pending.remove(&id) {
                        memory.remember(Outcome {
                            notification: n,
                            at,
                            attempts,
                            error: None,
                        });
                    }
                }
                Record::Dead {
                    id,
                    at,
                    attempts,
                    error,
                } => {
                    if let Some(n) = pending.remove(&id) {
                        memory.remember(Outcome {
                            notification: n,
                            at,
                            attempts,
                            error: Some(error),
                        });
                    }
                }
                Record::History { o } => {
                    memory.next_id = memory.next_id.max(o.notification.id + 1);
                    memory.remember(o);
                }
            }
        }
        let len = journal.file.metadata()?.len();
        if good < len {
            tracing::warn!(
                path = %path.display(),
                kept = good,
                dropped = len - good,
                "The alerting journal ends in a torn write; cutting it off."
            );
            journal.file.set_len(good)?;
            journal.file.sync_all()?;
        }
        journal.file.seek(SeekFrom::End(0))?;
        journal.bytes = good;
        if created {
            sync_dir(dir)?;
        }
        for n in pending.into_values() {
            memory
                .queues
                .entry(n.target.clone())
                .or_default()
                .push_back(n);
        }
        Ok(Outbox {
            journal: Mutex::new(journal),
            memory: Mutex::new(memory),
            wake: Mutex::new(BTreeMap::new()),
            #[cfg(test)]
            before_append: Mutex::new(None),
        })
    }

    /// [`Outbox::open`] on a blocking thread.
    ///
    /// # Errors
    /// As [`Outbox::open`].
    pub(crate) async fn open_blocking(dir: PathBuf) -> std::io::Result<Outbox> {
        joined(tokio::task::spawn_blocking(move || Outbox::open(&dir)).await)
    }

    /// The state saved by the last [`Outbox::commit`], if any.
    pub fn saved_state(&self) -> Option<serde_json::Value> {
        self.memory.lock().state.clone()
    }

    /// [`Outbox::commit`] on a blocking thread, so that its fsync holds up no async
    /// worker. Commits are appended in the order they reach the journal: a caller that
    /// needs an order (the engine) starts the next one after this one has finished.
    pub(crate) fn spawn_commit(
        self: &Arc<Self>,
        notifications: Vec<(String, String, String)>,
        state: Option<serde_json::Value>,
        now: i64,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let outbox = self.clone();
        tokio::task::spawn_blocking(move || outbox.commit(notifications, state, now))
    }

    /// [`Outbox::finish`] on a blocking thread.
    ///
    /// # Errors
    /// As [`Outbox::finish`].
    pub(crate) async fn finish_blocking(
        self: &Arc<Self>,
        target: &str,
        id: u64,
        attempts: u32,
        error: Option<String>,
        now: i64,
    ) -> std::io::Result<()> {
        let outbox = self.clone();
        let target = target.to_string();
        joined(
            tokio::task::spawn_blocking(move || outbox.finish(&target, id, attempts, error, now))
                .await,
        )
    }

    /// Runs `hook` just before each commit's append, on the thread that appends.
    #[cfg(test)]
    pub(crate) fn before_append(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.before_append.lock() = Some(Arc::new(hook));
    }

    /// Durably queues `notifications` (target, summary, body) together with `state`,
    /// then wakes their targets' workers.
    ///
    /// # Errors
    /// When the journal cannot be written or synced; nothing is queued then.
    pub fn commit(
        &self,
        notifications: Vec<(String, String, String)>,
        state: Option<serde_json::Value>,
        now: i64,
    ) -> std::io::Result<()> {
        if notifications.is_empty() && state.is_none() {
            return Ok(());
        }
        let mut targets = Vec::new();
        {
            let mut journal = self.journal.lock();
            // Only a writer holding the journal changes the memory, so what is read here
            // still holds when the append is done.
            let memory = self.memory.lock();
            let mut id = memory.next_id;
            let ns: Vec<Notification> = notifications
                .into_iter()
                .map(|(target, summary, body)| {
                    id += 1;
                    Notification {
                        id: id - 1,
                        target,
                        created: now,
                        summary,
                        body,
                    }
                })
                .collect();
            // Older queued batches of replaceable targets (not the head: it may be in
            // flight) are dropped in the same append.
            let mut dropped = Vec::new();
            for n in &ns {
                if superseded_by_newer(&n.target)
                    && let Some(q) = memory.queues.get(&n.target)
                {
                    dropped.extend(q.iter().skip(1).map(|old| old.id));
                }
            }
            drop(memory);
            let mut buf = Vec::new();
            for id in &dropped {
                buf.extend(encode(&Record::Dropped { id: *id })?);
            }
            buf.extend(encode(&Record::Commit {
                ns: ns.clone(),
                state: state.clone(),
            })?);
            #[cfg(test)]
            if let Some(hook) = self.before_append.lock().clone() {
                hook();
            }
            journal.append(&buf)?;
            let mut memory = self.memory.lock();
            memory.next_id = id;
            if state.is_some() {
                memory.state = state;
            }
            for q in memory.queues.values_mut() {
                q.retain(|n| !dropped.contains(&n.id));
            }
            for n in ns {
                targets.push(n.target.clone());
                memory
                    .queues
                    .entry(n.target.clone())
                    .or_default()
                    .push_back(n);
            }
            if journal.bytes > COMPACT_BYTES {
                let compacted = memory.records();
                drop(memory);
                if let Err(e) = compacted.and_then(|buf| journal.replace(&buf)) {
                    tracing::warn!(error = %e, "Could not compact the alerting journal; it keeps growing.");
                }
            }
        }
        for t in targets {
            self.waker(&t).notify_one();
        }
        Ok(())
    }

    /// The notification `target` must deliver next.
    pub fn head(&self, target: &str) -> Option<Notification> {
        self.memory
            .lock()
            .queues
            .get(target)
            .and_then(|q| q.front().cloned())
    }

    /// The targets that have queued notifications.
    pub fn targets(&self) -> Vec<String> {
        self.memory
            .lock()
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Records that notification `id` of `target` was delivered (`error` = None) or
    /// given up, durably, and takes it off the queue.
    ///
    /// # Errors
    /// When the journal cannot be written; the notification stays queued then.
    pub fn finish(
        &self,
        target: &str,
        id: u64,
        attempts: u32,
        error: Option<String>,
        now: i64,
    ) -> std::io::Result<()> {
        let mut journal = self.journal.lock();
        let record = match &error {
            None => Record::Done {
                id,
                at: now,
                attempts,
            },
            Some(e) => Record::Dead {
                id,
                at: now,
                attempts,
                error: e.clone(),
            },
        };
        journal.append(&encode(&record)?)?;
        let mut memory = self.memory.lock();
        let queue = memory.queues.entry(target.to_string()).or_default();
        if let Some(pos) = queue.iter().position(|n| n.id == id)
            && let Some(n) = queue.remove(pos)
        {
            memory.remember(Outcome {
                notification: n,
                at: now,
                attempts,
                error,
            });
        }
        Ok(())
    }

    /// What waits, what was delivered (newest last) and the dead letters.
    pub fn report(&self) -> (Vec<Notification>, Vec<Outcome>, Vec<Outcome>) {
        let memory = self.memory.lock();
        (
            memory.queues.values().flatten().cloned().collect(),
            memory.history.iter().cloned().collect(),
            memory.dead.iter().cloned().collect(),
        )
    }

    /// How many notifications wait.
    pub fn queued(&self) -> usize {
        self.memory.lock().queues.values().map(VecDeque::len).sum()
    }

    /// The wake-up signal of `target`'s worker.
    pub fn waker(&self, target: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .entry(target.to_string())
            .or_default()
            .clone()
    }
}

impl Journal {
    /// Appends `buf` and syncs it: durable when this returns `Ok`.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let written = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut off whatever part of `buf` reached the file, so the next append starts
            // on a fresh line and replay keeps everything before it.
            let _ = self.file.set_len(self.bytes);
            let _ = self.file.seek(SeekFrom::End(0));
            return Err(e);
        }
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Replaces the journal with `buf` (a compacted one): a new file, fsynced, renamed
    /// over the old one.
    fn replace(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(buf)?;
        file.sync_all()?;
        drop(file);
        // Open the new file before it replaces the old one, so appends never go to an
        // unlinked file.
        let mut fresh = OpenOptions::new().read(true).append(true).open(&tmp)?;
        fresh.seek(SeekFrom::End(0))?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = fresh;
        self.bytes = buf.len() as u64;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Memory {
    fn remember(&mut self, outcome: Outcome) {
        let (list, cap) = if outcome.error.is_some() {
            (&mut self.dead, DEAD_LETTERS)
        } else {
            (&mut self.history, HISTORY)
        };
        list.push_back(outcome);
        while list.len() > cap {
            list.pop_front();
        }
    }

    /// The journal compacted: the last state, the queued notifications and the
    /// remembered outcomes.
    fn records(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        for o in self.history.iter().chain(self.dead.iter()) {
            buf.extend(encode(&Record::History { o: o.clone() })?);
        }
        for n in self.queues.values().flatten() {
            buf.extend(encode(&Record::Enqueue { n: n.clone() })?);
        }
        if let Some(state) = &self.state {
            buf.extend(encode(&Record::State {
                state: state.clone(),
            })?);
        }
        buf.extend(encode(&Record::NextId { id: self.next_id })?);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_notifications_and_state_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path()).unwrap();
            o.commit(
                vec![
                    ("webhook/a".into(), "one".into(), "{\"n\":1}".into()),
                    ("webhook/a".into(), "two".into(), "{\"n\":2}".into()),
                    ("alertmanager/x".into(), "three".into(), "[]".into()),
                ],
                Some(serde_json::json!({"v": 1})),
                10,
            )
            .unwrap();
            let head = o.head("webhook/a").unwrap();
            assert_eq!(head.summary, "one");
            o.finish("webhook/a", head.id, 1, None, 11).unwrap();
            let am = o.head("alertmanager/x").unwrap();
            o.finish("alertmanager/x", am.id, 3, Some("gave up".into()), 12)
                .unwrap();
        }
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.saved_state(), Some(serde_json::json!({"v": 1})));
        assert_eq!(o.head("webhook/a").unwrap().summary, "two");
        assert!(o.head("alertmanager/x").is_none());
        let (pending, delivered, dead) = o.report();
        assert_eq!(pending.len(), 1);
        assert_eq!(delivered[0].notification.summary, "one");
        assert_eq!(dead[0].error.as_deref(), Some("gave up"));
        // New ids continue after the old ones.
        o.commit(
            vec![("webhook/a".into(), "four".into(), "{}".into())],
            None,
            20,
        )
        .unwrap();
        let ids: Vec<u64> = o.report().0.iter().map(|n| n.id).collect();
        assert!(ids[1] > ids[0], "{ids:?}");
    }

    #[test]
    fn a_torn_last_write_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path()).unwrap();
            o.commit(
                vec![("webhook/a".into(), "kept".into(), "{}".into())],
                None,
                1,
            )
            .unwrap();
        }
        let path = dir.path().join("journal");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0000abcd {\"t\":\"enqueue\",\"n\":{\"id\":9")
            .unwrap();
        drop(f);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.report().0.len(), 1);
        o.commit(
            vec![("webhook/a".into(), "after".into(), "{}".into())],
            None,
            2,
        )
        .unwrap();
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        let summaries: Vec<String> = o.report().0.into_iter().map(|n| n.summary).collect();
        assert_eq!(summaries, ["kept", "after"]);
    }

    #[test]
    fn a_newer_alertmanager_batch_replaces_queued_ones_but_not_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        for i in 0..3 {
            o.commit(
                vec![
                    ("alertmanager/x".into(), format!("am{i}"), "[]".into()),
                    ("webhook/a".into(), format!("w{i}"), "{}".into()),
                ],
                None,
                i,
            )
            .unwrap();
        }
        let queued =
            |o: &Outbox| -> Vec<String> { o.report().0.into_iter().map(|n| n.summary).collect() };
        assert_eq!(queued(&o), ["am0", "am2", "w0", "w1", "w2"]);
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(queued(&o), ["am0", "am2", "w0", "w1", "w2"]);
    }

    #[test]
    fn a_torn_multibyte_character_is_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path()).unwrap();
            o.commit(
                vec![("webhook/a".into(), "µs".into(), "{}".into())],
                None,
                1,
            )
            .unwrap();
        }
        let path = dir.path().join("journal");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&"0000abcd {\"t\":\"µ".as_bytes()[..16])
            .unwrap();
        drop(f);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.report().0[0].summary, "µs");
    }

    #[test]
    fn compaction_keeps_what_matters() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let big = "x".repeat(1 << 20);
        for i in 0..10 {
            o.commit(
                vec![("webhook/a".into(), format!("n{i}"), "{}".into())],
                Some(serde_json::json!({ "i": i, "pad": big })),
                i,
            )
            .unwrap();
            let head = o.head("webhook/a").unwrap();
            if i < 9 {
                o.finish("webhook/a", head.id, 1, None, i).unwrap();
            }
        }
        let size = std::fs::metadata(dir.path().join("journal")).unwrap().len();
        assert!(size < COMPACT_BYTES, "compacted to {size}");
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.saved_state().unwrap()["i"], 9);
        assert_eq!(o.report().0[0].summary, "n9");
        assert_eq!(o.report().1.len(), 9);
        // Ids keep growing after compaction.
        o.commit(
            vec![("webhook/a".into(), "n10".into(), "{}".into())],
            None,
            10,
        )
        .unwrap();
        let ids: Vec<u64> = o.report().0.iter().map(|n| n.id).collect();
        assert_eq!(ids, [10, 11]);
    }
}
