//! Unique IDs: 64-bit, numeric, time-sortable Snowflake IDs, unique across
//! every live instance because each instance leases its 10-bit machine id.
//!
//! The lease is an item per machine id in the id-leases table:
//! `{pk: "machine#0042", sk: "lease", owner, expiresAt}`. Taking a free or
//! expired lease is a conditional put on the exact item seen, so two
//! instances never both win. The new holder issues only timestamps after the
//! previous lease's end (`expiresAt` of the item it replaced), while the old
//! holder stops `margin` before that end unless it renewed, so even a
//! recycled machine id never repeats an ID, after a `kill -9` too.

mod snowflake;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

pub use snowflake::{Generator, IdParts, MAX_MACHINE_ID, SnowflakeId};

use crate::ports::Clock;
use crate::ports::table::{
    Condition, Consistency, Key, Table, TableError, Update, get_i64, get_str, num, s,
};

pub const MAX_IDS_PER_REQUEST: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("count must be an integer from 1 to {MAX_IDS_PER_REQUEST}")]
    InvalidCount,
    #[error("`{0}` is not an ID: expected a positive 64-bit decimal integer")]
    InvalidId(String),
    #[error("the clock moved back {behind_ms} ms; refusing to issue IDs until it catches up")]
    ClockMovedBackwards { behind_ms: u64 },
    #[error("the clock reads {unix_ms} ms, outside the ID format's range")]
    ClockOutOfRange { unix_ms: u64 },
    #[error("this instance's machine-id lease has lapsed")]
    LeaseExpired,
    #[error("every machine id is leased by a live instance")]
    NoMachineId,
    #[error("the lease store is unavailable: {0}")]
    Unavailable(String),
    #[error("this instance is shutting down")]
    ShuttingDown,
    #[error("invalid id configuration: {0}")]
    InvalidConfig(String),
}

impl From<TableError> for IdError {
    fn from(e: TableError) -> Self {
        IdError::Unavailable(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct IdConfig {
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// Renew when less than this is left.
    pub renew_before: Duration,
    /// Stop issuing this long before the lease ends (clock skew allowance).
    pub margin: Duration,
    /// The machine ids this deployment may lease.
    pub machines: RangeInclusive<u16>,
    /// How long to wait for a clock that went backwards.
    pub max_backwards_wait: Duration,
}

impl Default for IdConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            renew_before: Duration::from_secs(40),
            margin: Duration::from_secs(2),
            machines: 0..=MAX_MACHINE_ID,
            max_backwards_wait: Duration::from_millis(10),
        }
    }
}

impl IdConfig {
    /// Reads `ID_LEASE_SECONDS` and `ID_MACHINE_RANGE` (`first-last`).
    pub fn from_env() -> Result<Self, String> {
        let mut config = Self::default();
        if let Ok(v) = std::env::var("ID_LEASE_SECONDS") {
            let secs: u64 = v
                .parse()
                .ok()
                .filter(|s| (3..=3600).contains(s))
                .ok_or_else(|| format!("ID_LEASE_SECONDS must be 3 to 3600, got `{v}`"))?;
            config = config.with_lease(Duration::from_secs(secs));
        }
        if let Ok(v) = std::env::var("ID_MACHINE_RANGE") {
            config.machines = parse_range(&v).ok_or_else(|| {
                format!(
                    "ID_MACHINE_RANGE must be `first-last` within 0-{MAX_MACHINE_ID}, got `{v}`"
                )
            })?;
        }
        Ok(config)
    }

    /// A lease of `lease`, renewed once a third of it has passed (two thirds
    /// left), with a margin of a thirtieth (0.1 s to 2 s).
    pub fn validate(&self) -> Result<(), String> {
        let (a, b) = (*self.machines.start(), *self.machines.end());
        if a > b || b > MAX_MACHINE_ID {
            return Err(format!(
                "machine range {a}-{b} is not within 0-{MAX_MACHINE_ID}"
            ));
        }
        if self.margin >= self.lease || self.renew_before >= self.lease {
            return Err("margin and renew_before must be shorter than the lease".into());
        }
        Ok(())
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.renew_before = lease * 2 / 3;
        self.margin = (lease / 30).clamp(Duration::from_millis(100), Duration::from_secs(2));
        self
    }
}

fn parse_range(v: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = v.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b <= MAX_MACHINE_ID).then_some(a..=b)
}

/// How many machine ids one acquisition tries before giving up (bounded, so
/// a nearly full range cannot stall a request for a thousand reads).
const MAX_PROBES: u32 = 64;

const OWNER: &str = "owner";
const EXPIRES_AT: &str = "expiresAt";
const RELEASED: &str = "released";

fn lease_key(machine: u16) -> Key {
    Key::new(format!("machine#{machine:04}"), "lease")
}

/// Issues IDs for one instance, holding and renewing its machine-id lease.
pub struct IdService {
    table: Arc<dyn Table>,
    clock: Arc<dyn Clock>,
    config: IdConfig,
    owner: String,
    current: tokio::sync::Mutex<Option<Arc<Generator>>>,
    /// The last timestamp used under any earlier lease of this instance.
    retired_last_ms: std::sync::atomic::AtomicU64,
    released: std::sync::atomic::AtomicBool,
}

impl IdService {
    pub fn new(
        table: Arc<dyn Table>,
        clock: Arc<dyn Clock>,
        config: IdConfig,
    ) -> Result<Self, IdError> {
        config.validate().map_err(IdError::InvalidConfig)?;
        Ok(Self {
            table,
            clock,
            config,
            owner: uuid::Uuid::new_v4().to_string(),
            current: tokio::sync::Mutex::new(None),
            retired_last_ms: std::sync::atomic::AtomicU64::new(0),
            released: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn retire(&self, g: &Generator) {
        g.revoke();
        if let Some(last) = g.last_ms() {
            self.retired_last_ms
                .fetch_max(last, std::sync::atomic::Ordering::AcqRel);
        }
    }

    pub fn parse_count(raw: Option<&str>) -> Result<usize, IdError> {
        match raw {
            None => Ok(1),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_IDS_PER_REQUEST).contains(n))
                .ok_or(IdError::InvalidCount),
        }
    }

    /// `count` new IDs, strictly increasing.
    pub async fn generate(&self, count: usize) -> Result<Vec<SnowflakeId>, IdError> {
        if !(1..=MAX_IDS_PER_REQUEST).contains(&count) {
            return Err(IdError::InvalidCount);
        }
        let mut ids = Vec::with_capacity(count);
        let generator = self.generator().await?;
        match generator.fill(count, |id| ids.push(id)) {
            Ok(()) => Ok(ids),
            // The lease lapsed while issuing: renew (or re-acquire) and go on.
            Err(IdError::LeaseExpired) => {
                let generator = self.generator().await?;
                let rest = count - ids.len();
                generator.fill(rest, |id| ids.push(id))?;
                Ok(ids)
            }
            Err(e) => Err(e),
        }
    }

    /// Decodes an ID given as a decimal string.
    pub fn decode(raw: &str) -> Result<IdParts, IdError> {
        Ok(raw.parse::<SnowflakeId>()?.parts())
    }

    /// The machine id held now, if any.
    pub async fn machine(&self) -> Option<u16> {
        self.current.lock().await.as_ref().map(|g| g.machine())
    }

    /// The generator to use now: the current one, renewed if due, or a new
    /// lease.
    pub async fn generator(&self) -> Result<Arc<Generator>, IdError> {
        let mut current = self.current.lock().await;
        if self.released.load(std::sync::atomic::Ordering::Acquire) {
            return Err(IdError::ShuttingDown);
        }
        if let Some(g) = current.as_ref() {
            let now = self.clock.now_ms();
            let renew_at = g
                .lease_until_ms()
                .saturating_sub(self.config.renew_before.as_millis() as u64);
            if now < renew_at {
                return Ok(g.clone());
            }
            match self.renew(g).await {
                Ok(()) => return Ok(g.clone()),
                Err(RenewError::Lost) => {
                    tracing::warn!(
                        machine = g.machine(),
                        "machine-id lease lost to another instance"
                    );
                    self.retire(g);
                    *current = None;
                }
                Err(RenewError::Store(e)) => {
                    let margin = self.config.margin.as_millis() as u64;
                    if now + margin < g.lease_until_ms() {
                        // Still inside the lease: keep issuing, renew next time.
                        tracing::warn!(error = %e, "lease renewal failed; will retry");
                        return Ok(g.clone());
                    }
                    return Err(e.into());
                }
            }
        }
        let g = Arc::new(self.acquire().await?);
        g.raise_floor(
            self.retired_last_ms
                .load(std::sync::atomic::Ordering::Acquire),
        );
        tracing::info!(
            machine = g.machine(),
            lease_until_ms = g.lease_until_ms(),
            "machine-id lease acquired"
        );
        *current = Some(g.clone());
        Ok(g)
    }

    /// Renews the lease if it is due; for a host that lives between requests.
    pub async fn renew_if_due(&self) -> Result<(), IdError> {
        let has_lease = self.current.lock().await.is_some();
        if has_lease {
            self.generator().await?;
        }
        Ok(())
    }

    /// Takes a free or expired machine id, starting at a random one.
    async fn acquire(&self) -> Result<Generator, IdError> {
        let first = *self.config.machines.start();
        let span = u32::from(*self.config.machines.end() - first) + 1;
        let start = fastrand::u32(0..span);
        for i in 0..span.min(MAX_PROBES) {
            let machine = first + ((start + i) % span) as u16;
            let key = lease_key(machine);
            let now = self.clock.now_ms();
            let (condition, floor) = match self.table.get(&key, Consistency::Strong).await? {
                None => (Condition::NotExists, 0),
                Some(item) => {
                    let expires = get_i64(&item, EXPIRES_AT).unwrap_or(i64::MAX).max(0) as u64;
                    if expires > now {
                        continue;
                    }
                    let owner = get_str(&item, OWNER).unwrap_or_default().to_owned();
                    let seen =
                        Condition::eq(EXPIRES_AT, num(expires)).and(Condition::eq(OWNER, s(owner)));
                    (seen, expires)
                }
            };
            let until = now + self.config.lease.as_millis() as u64;
            let mut item = key.to_item();
            item.insert(OWNER.into(), s(&self.owner));
            item.insert(EXPIRES_AT.into(), num(until));
            item.insert("floor".into(), num(floor));
            item.insert("acquiredAt".into(), num(now));
            match self.table.put(item, Some(condition)).await {
                Ok(()) => {
                    return Ok(Generator::new(
                        machine,
                        floor,
                        until,
                        self.config.margin,
                        self.config.max_backwards_wait,
                        self.clock.clone(),
                    ));
                }
                Err(TableError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IdError::NoMachineId)
    }

    /// Updates the lease item only while this instance owns it.
    async fn update_own_lease(&self, machine: u16, update: Update) -> Result<(), TableError> {
        let owned = Condition::eq(OWNER, s(&self.owner));
        self.table
            .update(&lease_key(machine), update, Some(owned))
            .await
            .map(drop)
    }

    async fn renew(&self, g: &Generator) -> Result<(), RenewError> {
        let now = self.clock.now_ms();
        let until = (now + self.config.lease.as_millis() as u64).max(g.lease_until_ms());
        let update = Update::new()
            .set(EXPIRES_AT, num(until))
            .set("renewedAt", num(now));
        match self.update_own_lease(g.machine(), update).await {
            Ok(_) => {
                g.extend_lease(until);
                Ok(())
            }
            Err(TableError::ConditionFailed { .. }) => Err(RenewError::Lost),
            Err(e) => Err(RenewError::Store(e)),
        }
    }

    /// Gives the machine id back (graceful shutdown). The next holder starts
    /// after the last timestamp this instance used.
    pub async fn release(&self) -> Result<(), IdError> {
        let mut current = self.current.lock().await;
        self.released
            .store(true, std::sync::atomic::Ordering::Release);
        let Some(g) = current.take() else {
            return Ok(());
        };
        g.revoke();
        // A poisoned generator state: leave the lease to expire instead.
        let Some(last) = g.last_ms() else {
            return Ok(());
        };
        let update = Update::new()
            .set(EXPIRES_AT, num(last))
            .set(OWNER, s(RELEASED));
        match self.update_own_lease(g.machine(), update).await {
            Ok(_) | Err(TableError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews in the background while the host lives; stops when dropped.
    pub fn spawn_renewal(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = Arc::downgrade(self);
        let every = (self.config.lease / 6).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                if let Err(e) = service.renew_if_due().await {
                    tracing::warn!(error = %e, "background lease renewal failed");
                }
            }
        })
    }
}

enum RenewError {
    Lost,
    Store(TableError),
}
