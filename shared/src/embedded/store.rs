//! The local host's durable store: one SQLite database in WAL mode with
//! `synchronous = FULL`, so a write is on disk before it is acknowledged and a
//! `kill -9` loses nothing that was answered.
//!
//! Writes go through one writer thread with group commit: the writes that
//! arrive while a commit is on its way to disk are applied together, each in
//! its own savepoint (so one that fails rolls back alone, and each sees the
//! ones before it, as if run one by one), then committed with one fsync.
//! Nobody hears back before that fsync, so acknowledged still means durable;
//! under load many writes share one fsync instead of queueing for their own.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

use crate::ports::Clock;
use crate::ports::clock::SystemClock;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    tbl  TEXT NOT NULL,
    pk   TEXT NOT NULL,
    sk   TEXT NOT NULL,
    ttl  INTEGER,
    data TEXT NOT NULL,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_ttl ON items (ttl) WHERE ttl IS NOT NULL;

CREATE TABLE IF NOT EXISTS messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue             TEXT NOT NULL,
    id                TEXT NOT NULL,
    body              TEXT NOT NULL,
    attributes        TEXT NOT NULL,
    group_id          TEXT,
    dedupe_id         TEXT,
    sent_at           INTEGER NOT NULL,
    visible_at        INTEGER NOT NULL,
    receive_count     INTEGER NOT NULL DEFAULT 0,
    first_received_at INTEGER,
    receipt           TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt) WHERE receipt IS NOT NULL;

CREATE TABLE IF NOT EXISTS queue_dedupe (
    queue      TEXT NOT NULL,
    dedupe_id  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedupe_id)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot open the database {0}: {1}")]
    Open(PathBuf, rusqlite::Error),
}

/// Runs one write inside the batch's transaction; returns what to do once the
/// batch's commit is known (`Some(message)` if it failed).
type WriteJob = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;

/// Writes applied in one transaction at most.
const MAX_GROUP: usize = 256;

/// One database file shared by every embedded table and queue.
pub struct EmbeddedStore {
    path: PathBuf,
    writes: Mutex<mpsc::Sender<WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Wakes long-polling receivers when a message is sent.
    pub(crate) sent: Notify,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `hanul.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        Self::open_with_clock(dir, Arc::new(SystemClock))
    }

    pub fn open_with_clock(dir: &Path, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StoreError> {
        private_dir(dir).map_err(|e| StoreError::Dir(dir.to_owned(), e))?;
        let path = dir.join("hanul.db");
        private_file(&path).map_err(|e| StoreError::Dir(path.clone(), e))?;
        let writer = open_connection(&path).map_err(|e| StoreError::Open(path.clone(), e))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| StoreError::Open(path.clone(), e))?;
        let (writes, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("hanul-store-writer".into())
            .spawn(move || group_commit(writer, jobs))
            .map_err(|e| StoreError::Dir(dir.to_owned(), e))?;
        Ok(Arc::new(Self {
            path,
            writes: Mutex::new(writes),
            readers: Mutex::new(Vec::new()),
            clock,
            sent: Notify::new(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs `f` in the writer's transaction (in its own savepoint, grouped
    /// with whatever else is being written); answers after the commit.
    pub(crate) async fn write<T, E, F>(self: &Arc<Self>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<rusqlite::Error> + From<Unavailable> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: WriteJob = Box::new(move |tx| {
            let out = match tx.execute_batch("SAVEPOINT w") {
                Err(e) => Err(E::from(e)),
                Ok(()) => {
                    let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(tx)))
                        .unwrap_or_else(|_| Err(E::from(Unavailable("a write panicked".into()))));
                    let end = if out.is_ok() {
                        "RELEASE w"
                    } else {
                        "ROLLBACK TO w; RELEASE w"
                    };
                    match tx.execute_batch(end) {
                        Ok(()) => out,
                        Err(e) => Err(E::from(e)),
                    }
                }
            };
            Box::new(move |commit: Option<&str>| {
                let out = match commit {
                    None => out,
                    Some(message) => Err(E::from(Unavailable(message.to_owned()))),
                };
                let _ = answer.send(out);
            })
        });
        let sent = self
            .writes
            .lock()
            .map_err(|_| E::from(Unavailable("the writer queue is poisoned".into())))?
            .send(job);
        if sent.is_err() {
            return Err(E::from(Unavailable("the writer thread has stopped".into())));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(E::from(Unavailable("the write was dropped".into()))))
    }

    /// Runs `f` on a reader connection (WAL: readers never block the writer).
    pub(crate) async fn read<T, E, F>(self: &Arc<Self>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<rusqlite::Error> + From<Unavailable> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let store = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let pooled = store.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&store.path)?,
            };
            let out = f(&conn);
            if let Ok(mut pool) = store.readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            out
        })
        .await;
        joined.map_err(|e| E::from(Unavailable(format!("store task failed: {e}"))))?
    }

    /// Deletes items past their TTL and expired FIFO deduplication ids. Reads already hide them; this only
    /// reclaims space, as DynamoDB's background sweep does.
    pub async fn sweep_expired(self: &Arc<Self>) -> Result<usize, crate::ports::TableError> {
        let now = self.clock.now_secs() as i64;
        let now_ms = self.clock.now_ms() as i64;
        self.write(move |tx| {
            let items = tx.execute(
                "DELETE FROM items WHERE ttl IS NOT NULL AND ttl <= ?1",
                [now],
            )?;
            // FIFO deduplication ids past their five-minute window.
            tx.execute("DELETE FROM queue_dedupe WHERE expires_at <= ?1", [now_ms])?;
            Ok(items)
        })
        .await
    }
}

/// The writer thread: takes the first waiting write, then every write that is
/// already queued behind it (up to `MAX_GROUP`), and commits them together.
fn group_commit(mut conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                // Dropping the jobs unrun answers each caller "unavailable".
                tracing::error!(error = %e, writes = batch.len(), "the store cannot begin a write");
                drop(batch);
                continue;
            }
        };
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&tx)).collect();
        let committed = tx.commit().map_err(|e| format!("commit failed: {e}"));
        let failure = committed.as_ref().err().map(String::as_str);
        for complete in completions {
            complete(failure);
        }
    }
}

/// A failure of the store itself (not of a request).
#[derive(Debug)]
pub struct Unavailable(pub String);

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database refused WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Creates `dir` (and its parents) readable by its owner only, and closes an
/// existing one to the same: the store holds every user's phone number,
/// email and messages.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data directory was readable by others; it is now 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Creates `path` 0600 when missing and tightens it when it exists. SQLite
/// gives its `-wal` and `-shm` files the database file's permissions.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        for file in [
            path.to_owned(),
            path.with_extension("db-wal"),
            path.with_extension("db-shm"),
        ] {
            match std::fs::metadata(&file) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TableError;

    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_directory_and_database_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        // A directory left world-readable by an earlier version is closed.
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("hanul.db"), b"").unwrap();
        std::fs::set_permissions(dir.join("hanul.db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let store = EmbeddedStore::open(&dir).unwrap();
        store
            .write(|tx| -> Result<(), TableError> {
                tx.execute(
                    "INSERT INTO items (tbl, pk, sk, data) VALUES ('t', 'p', 's', '{}')",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        for file in ["hanul.db", "hanul.db-wal", "hanul.db-shm"] {
            let path = dir.join(file);
            assert!(path.exists(), "{file} exists");
            assert_eq!(mode(&path), 0o600, "{file}");
        }
        // A fresh one, nested.
        let fresh = root.path().join("a/b");
        EmbeddedStore::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("hanul.db")), 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_writes_fail_alone_and_a_panic_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let writes = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |tx| -> Result<(), TableError> {
                        tx.execute(
                            "INSERT INTO items (tbl, pk, sk, data) VALUES ('t', ?1, 's', '{}')",
                            [format!("k{i}")],
                        )?;
                        if i % 4 == 0 {
                            return Err(TableError::Invalid(format!("refused {i}")));
                        }
                        if i == 5 {
                            panic!("a bug in one write");
                        }
                        Ok(())
                    })
                    .await
            })
        });
        let mut ok = 0;
        for w in writes {
            if w.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        // 16 refused and 1 panicked: their rows were rolled back, no one else's.
        assert_eq!(ok, 47);
        let rows: i64 = store
            .read(|conn| -> Result<i64, TableError> {
                Ok(
                    conn.query_row("SELECT count(*) FROM items WHERE tbl = 't'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap();
        assert_eq!(rows, 47);
    }
}
