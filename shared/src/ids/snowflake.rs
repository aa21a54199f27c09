//! The Snowflake ID format and a generator for one machine id.
//!
//! ```text
//!  0 | 41 bits: ms since EPOCH_MS | 10 bits: machine | 12 bits: sequence
//! ```
//! Positive as a signed 64-bit integer, sortable by time, and good for
//! 2^41 ms ≈ 69.7 years from the epoch (until 2094).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::IdError;
use crate::ports::Clock;

/// 2025-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
pub const TIMESTAMP_BITS: u32 = 41;
pub const MACHINE_BITS: u32 = 10;
pub const SEQUENCE_BITS: u32 = 12;
pub const MAX_MACHINE_ID: u16 = (1 << MACHINE_BITS) - 1;
pub const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;
pub const MAX_TIMESTAMP: u64 = (1 << TIMESTAMP_BITS) - 1;

/// One unique ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnowflakeId(u64);

/// The fields of an ID, as `GET /api/v1/ids/{id}` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdParts {
    pub id: String,
    pub timestamp_ms: u64,
    pub time: String,
    pub machine_id: u16,
    pub sequence: u16,
}

impl SnowflakeId {
    pub fn from_parts(unix_ms: u64, machine: u16, sequence: u64) -> Result<Self, IdError> {
        let since = unix_ms
            .checked_sub(EPOCH_MS)
            .filter(|t| *t <= MAX_TIMESTAMP)
            .ok_or(IdError::ClockOutOfRange { unix_ms })?;
        debug_assert!(machine <= MAX_MACHINE_ID && sequence <= MAX_SEQUENCE);
        Ok(Self(
            (since << (MACHINE_BITS + SEQUENCE_BITS))
                | (u64::from(machine) << SEQUENCE_BITS)
                | sequence,
        ))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    pub fn unix_ms(self) -> u64 {
        (self.0 >> (MACHINE_BITS + SEQUENCE_BITS)) + EPOCH_MS
    }

    pub fn machine(self) -> u16 {
        ((self.0 >> SEQUENCE_BITS) & u64::from(MAX_MACHINE_ID)) as u16
    }

    pub fn sequence(self) -> u16 {
        (self.0 & MAX_SEQUENCE) as u16
    }

    pub fn parts(self) -> IdParts {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(self.unix_ms());
        IdParts {
            id: self.0.to_string(),
            timestamp_ms: self.unix_ms(),
            time: humantime::format_rfc3339_millis(time).to_string(),
            machine_id: self.machine(),
            sequence: self.sequence(),
        }
    }
}

impl std::fmt::Display for SnowflakeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SnowflakeId {
    type Err = IdError;

    /// Accepts the decimal form only: a positive signed 64-bit integer.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::InvalidId(s.chars().take(40).collect());
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = s.parse().map_err(|_| bad())?;
        if n <= 0 {
            return Err(bad());
        }
        Ok(Self(n as u64))
    }
}

#[derive(Debug)]
struct Sequence {
    last_ms: u64,
    seq: u64,
}

/// Issues IDs for one leased machine id. Never issues a timestamp at or below
/// `floor` (the previous holder's lease end), never issues once its lease is
/// within `margin` of expiring, and never goes backwards in time.
pub struct Generator {
    machine: u16,
    clock: Arc<dyn Clock>,
    state: Mutex<Sequence>,
    /// Lease end in epoch ms, moved forward by renewals, zero once lost.
    lease_until_ms: AtomicU64,
    margin_ms: u64,
    max_backwards_wait: Duration,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("machine", &self.machine)
            .field("lease_until_ms", &self.lease_until_ms)
            .finish()
    }
}

impl Generator {
    pub fn new(
        machine: u16,
        floor_ms: u64,
        lease_until_ms: u64,
        margin: Duration,
        max_backwards_wait: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            machine: {
                // Callers lease ids from a validated range; aliasing two ids
                // onto one would repeat IDs, so refuse outright.
                assert!(
                    machine <= MAX_MACHINE_ID,
                    "machine id {machine} is over {MAX_MACHINE_ID}"
                );
                machine
            },
            clock,
            // A timestamp equal to the floor counts as used up.
            state: Mutex::new(Sequence {
                last_ms: floor_ms,
                seq: MAX_SEQUENCE,
            }),
            lease_until_ms: AtomicU64::new(lease_until_ms),
            margin_ms: margin.as_millis() as u64,
            max_backwards_wait,
        }
    }

    pub fn machine(&self) -> u16 {
        self.machine
    }

    pub fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms.load(Ordering::Acquire)
    }

    /// The lease was renewed up to `until_ms`.
    pub fn extend_lease(&self, until_ms: u64) {
        self.lease_until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// The lease is gone: issue nothing more.
    pub fn revoke(&self) {
        self.lease_until_ms.store(0, Ordering::Release);
    }

    /// The last timestamp this generator used (its floor before any ID);
    /// `None` if a panic poisoned the state.
    pub fn last_ms(&self) -> Option<u64> {
        self.state.lock().map(|s| s.last_ms).ok()
    }

    /// Issue only timestamps after `ms` from now on: the IDs of a new lease
    /// then sort after everything this instance issued under an old one.
    pub fn raise_floor(&self, ms: u64) {
        if let Ok(mut state) = self.state.lock()
            && ms >= state.last_ms
        {
            state.last_ms = ms;
            state.seq = MAX_SEQUENCE;
        }
    }

    pub fn next_id(&self) -> Result<SnowflakeId, IdError> {
        let mut out = None;
        self.fill(1, |id| out = Some(id))?;
        out.ok_or(IdError::LeaseExpired)
    }

    /// Issues `count` IDs, strictly increasing, calling `sink` for each.
    pub fn fill(&self, count: usize, mut sink: impl FnMut(SnowflakeId)) -> Result<(), IdError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| IdError::Unavailable("id generator state is poisoned".into()))?;
        let mut issued = 0;
        while issued < count {
            let now = self.clock.now_ms();
            let lease_until = self.lease_until_ms.load(Ordering::Acquire);
            if now.saturating_add(self.margin_ms) >= lease_until {
                return Err(IdError::LeaseExpired);
            }
            if now < state.last_ms {
                self.wait_for(state.last_ms)?;
                continue;
            }
            if now == state.last_ms {
                if state.seq >= MAX_SEQUENCE {
                    // This millisecond is used up: spin until the next one.
                    std::hint::spin_loop();
                    continue;
                }
                state.seq += 1;
            } else {
                state.last_ms = now;
                state.seq = 0;
            }
            sink(SnowflakeId::from_parts(now, self.machine, state.seq)?);
            issued += 1;
        }
        Ok(())
    }

    /// The clock is behind the last timestamp used: wait a little for it,
    /// then give up rather than risk a duplicate.
    fn wait_for(&self, target_ms: u64) -> Result<(), IdError> {
        let start = Instant::now();
        loop {
            let now = self.clock.now_ms();
            if now >= target_ms {
                return Ok(());
            }
            if start.elapsed() >= self.max_backwards_wait {
                return Err(IdError::ClockMovedBackwards {
                    behind_ms: target_ms - now,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ManualClock;

    const T0: u64 = EPOCH_MS + 1_000_000;

    fn generator(clock: Arc<ManualClock>, floor: u64) -> Generator {
        Generator::new(
            7,
            floor,
            T0 + 60_000,
            Duration::from_secs(2),
            Duration::from_millis(5),
            clock,
        )
    }

    #[test]
    fn fields_round_trip() {
        let id = SnowflakeId::from_parts(T0, 1023, 4095).unwrap();
        assert_eq!(
            (id.unix_ms(), id.machine(), id.sequence()),
            (T0, 1023, 4095)
        );
        assert!((id.value() as i64) > 0);
        let parsed: SnowflakeId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let last = SnowflakeId::from_parts(EPOCH_MS + MAX_TIMESTAMP, 1023, 4095).unwrap();
        assert_eq!(last.value(), i64::MAX as u64);
        assert!(SnowflakeId::from_parts(EPOCH_MS - 1, 0, 0).is_err());
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "0",
            "-5",
            "abc",
            "1e5",
            " 12",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<SnowflakeId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sequence_exhaustion_waits_for_the_next_millisecond() {
        let clock = ManualClock::new(T0);
        let g = generator(clock.clone(), 0);
        let mut ids = Vec::new();
        g.fill(4096, |id| ids.push(id)).unwrap();
        assert!(ids.iter().all(|id| id.unix_ms() == T0));
        assert_eq!(ids.last().map(|id| id.sequence()), Some(4095));
        // The 4097th needs a new millisecond; move the clock from another thread.
        let mover = {
            let clock = clock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                clock.advance(1);
            })
        };
        let next = g.next_id().unwrap();
        mover.join().unwrap();
        assert_eq!((next.unix_ms(), next.sequence()), (T0 + 1, 0));
    }

    #[test]
    fn clock_going_back_waits_then_fails_without_duplicates() {
        let clock = ManualClock::new(T0);
        let g = generator(clock.clone(), 0);
        let first = g.next_id().unwrap();
        clock.set(T0 - 50);
        assert!(matches!(
            g.next_id(),
            Err(IdError::ClockMovedBackwards { behind_ms: 50 })
        ));
        clock.set(T0);
        let second = g.next_id().unwrap();
        assert!(second > first);
    }

    #[test]
    fn never_issues_at_or_below_the_floor() {
        let clock = ManualClock::new(T0);
        // The previous holder's lease ended 1 ms in our future.
        let g = generator(clock.clone(), T0 + 1);
        assert!(matches!(
            g.next_id(),
            Err(IdError::ClockMovedBackwards { .. })
        ));
        clock.set(T0 + 1);
        let mover = {
            let clock = clock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                clock.set(T0 + 2);
            })
        };
        let id = g.next_id().unwrap();
        mover.join().unwrap();
        assert_eq!(id.unix_ms(), T0 + 2);
    }

    #[test]
    fn stops_before_the_lease_ends() {
        let clock = ManualClock::new(T0);
        let g = generator(clock.clone(), 0);
        assert!(g.next_id().is_ok());
        clock.set(T0 + 58_000);
        assert!(matches!(g.next_id(), Err(IdError::LeaseExpired)));
        g.extend_lease(T0 + 120_000);
        assert!(g.next_id().is_ok());
        g.revoke();
        assert!(matches!(g.next_id(), Err(IdError::LeaseExpired)));
    }
}
