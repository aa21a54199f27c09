//! The local host's durable store: one SQLite database in WAL mode with
//! `synchronous = FULL`, so a write is on disk before it is acknowledged and a
//! `kill -9` loses nothing that was answered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// One database file shared by every embedded table and queue.
pub struct EmbeddedStore {
    path: PathBuf,
    writer: Mutex<Connection>,
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
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_owned(), e))?;
        let path = dir.join("hanul.db");
        let writer = open_connection(&path).map_err(|e| StoreError::Open(path.clone(), e))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| StoreError::Open(path.clone(), e))?;
        Ok(Arc::new(Self {
            path,
            writer: Mutex::new(writer),
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

    /// Runs `f` in one IMMEDIATE transaction on the single writer connection,
    /// on a blocking thread; commits when `f` returns `Ok`.
    pub(crate) async fn write<T, E, F>(self: &Arc<Self>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<rusqlite::Error> + From<Unavailable> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let store = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = store
                .writer
                .lock()
                .map_err(|_| Unavailable("the writer connection is poisoned".into()))?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await;
        joined.map_err(|e| E::from(Unavailable(format!("store task failed: {e}"))))?
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
