//! The five algorithms, each a pure function of (state, now, limit) →
//! (decision, new state). Nothing here knows where state is kept or what time
//! it is: the store and the clock are separate, so the same code runs on the
//! embedded store, on DynamoDB and under a fake clock in property tests.
//!
//! Every algorithm changes its state only when it admits a request, so a
//! refusal needs no write, and a refusal computed from an older copy of the
//! state is still right (other instances only ever consume more).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    TokenBucket,
    /// The leaky bucket as a meter: GCRA.
    LeakyBucket,
    FixedWindow,
    SlidingLog,
    /// Sliding window counter: this window's count plus the previous one's,
    /// weighted by how much of it still overlaps.
    SlidingWindow,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::LeakyBucket => "leaky_bucket",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::SlidingWindow => "sliding_window",
        }
    }

    /// The most requests the algorithm can admit in any interval of one
    /// window's length: what an in-process limiter may allow without ever
    /// refusing a request the rule would admit.
    pub fn worst_case_per_window(self, limit: &Limit) -> u64 {
        match self {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => limit.burst + limit.limit,
            Algorithm::SlidingLog => limit.limit,
            Algorithm::FixedWindow | Algorithm::SlidingWindow => 2 * limit.limit,
        }
    }
}

/// What a rule allows: `limit` requests per `window_ms`; `burst` is the
/// bucket size (token bucket) or the burst tolerance (leaky bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub limit: u64,
    pub window_ms: u64,
    pub burst: u64,
}

/// Kept per key. Times are milliseconds, the GCRA's in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", rename_all = "snake_case")]
pub enum State {
    /// Tokens in millionths, as of `at`.
    TokenBucket {
        micro: u64,
        at: u64,
    },
    /// Theoretical arrival time of the next request.
    Gcra {
        tat_us: u64,
    },
    FixedWindow {
        start: u64,
        count: u64,
    },
    /// Admission times within the last window, oldest first.
    SlidingLog {
        log: Vec<u64>,
    },
    SlidingWindow {
        start: u64,
        current: u64,
        previous: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests still allowed right now after this one.
    pub remaining: u64,
    /// When refused: wait this long and the request would be admitted.
    pub retry_after_ms: u64,
    /// Until the quota is whole again (for the `RateLimit` field's `t`).
    pub reset_ms: u64,
}

const MICRO: u128 = 1_000_000;

fn div_ceil(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

/// The decision for one request at `now_ms`, and the state to store if it
/// changed (`None`: leave it as it is).
pub fn decide(
    algorithm: Algorithm,
    state: Option<&State>,
    now_ms: u64,
    limit: &Limit,
) -> (Decision, Option<State>) {
    match algorithm {
        Algorithm::TokenBucket => token_bucket(state, now_ms, limit),
        Algorithm::LeakyBucket => gcra(state, now_ms, limit),
        Algorithm::FixedWindow => fixed_window(state, now_ms, limit),
        Algorithm::SlidingLog => sliding_log(state, now_ms, limit),
        Algorithm::SlidingWindow => sliding_window(state, now_ms, limit),
    }
}

/// How long a state matters: past this, it is as good as no state (its TTL).
pub fn relevant_until_ms(state: &State, limit: &Limit) -> u64 {
    match state {
        State::TokenBucket { micro, at } => {
            let missing = (limit.burst as u128 * MICRO).saturating_sub(*micro as u128);
            let refill = div_ceil(
                missing * limit.window_ms as u128,
                limit.limit as u128 * MICRO,
            );
            at.saturating_add(refill as u64)
        }
        State::Gcra { tat_us } => tat_us.div_ceil(1000),
        State::FixedWindow { start, .. } => start.saturating_add(limit.window_ms),
        State::SlidingLog { log } => log.last().map_or(0, |t| t.saturating_add(limit.window_ms)),
        State::SlidingWindow { start, .. } => start.saturating_add(2 * limit.window_ms),
    }
}

fn token_bucket(state: Option<&State>, now: u64, l: &Limit) -> (Decision, Option<State>) {
    let capacity = l.burst as u128 * MICRO;
    let rate = |elapsed: u64| elapsed as u128 * l.limit as u128 * MICRO / l.window_ms as u128;
    // Refilled up to the later of now and the stored time: an instance whose
    // clock is behind must not move the stored time back, or the next
    // instance would refill the same stretch twice.
    let (tokens, at) = match state {
        Some(State::TokenBucket { micro, at }) => (
            (*micro as u128 + rate(now.saturating_sub(*at))).min(capacity),
            now.max(*at),
        ),
        _ => (capacity, now),
    };
    let per_ms =
        |micro: u128| div_ceil(micro * l.window_ms as u128, l.limit as u128 * MICRO) as u64;
    if tokens >= MICRO {
        let left = tokens - MICRO;
        let decision = Decision {
            allowed: true,
            limit: l.burst,
            remaining: (left / MICRO) as u64,
            retry_after_ms: 0,
            reset_ms: per_ms(capacity - left),
        };
        (
            decision,
            Some(State::TokenBucket {
                micro: left as u64,
                at,
            }),
        )
    } else {
        // Tokens are counted as of `at`, which is later than now when this
        // clock is behind the one that stored them.
        let ahead = at - now;
        let decision = Decision {
            allowed: false,
            limit: l.burst,
            remaining: 0,
            retry_after_ms: ahead + per_ms(MICRO - tokens),
            reset_ms: ahead + per_ms(capacity - tokens),
        };
        (decision, None)
    }
}

fn gcra(state: Option<&State>, now_ms: u64, l: &Limit) -> (Decision, Option<State>) {
    // Emission interval, rounded up: never faster than the rule.
    let interval = div_ceil(l.window_ms as u128 * 1000, l.limit as u128) as u64;
    let tolerance = interval.saturating_mul(l.burst.saturating_sub(1));
    let now = now_ms.saturating_mul(1000);
    let tat = match state {
        Some(State::Gcra { tat_us }) => (*tat_us).max(now),
        _ => now,
    };
    if tat - now > tolerance {
        let wait = tat - now - tolerance;
        let decision = Decision {
            allowed: false,
            limit: l.burst,
            remaining: 0,
            retry_after_ms: wait.div_ceil(1000),
            reset_ms: (tat - now).div_ceil(1000),
        };
        return (decision, None);
    }
    let next = tat + interval;
    let remaining = (now + tolerance + interval).saturating_sub(next) / interval.max(1);
    let decision = Decision {
        allowed: true,
        limit: l.burst,
        remaining,
        retry_after_ms: 0,
        reset_ms: (next - now).div_ceil(1000),
    };
    (decision, Some(State::Gcra { tat_us: next }))
}

fn fixed_window(state: Option<&State>, now: u64, l: &Limit) -> (Decision, Option<State>) {
    let start = now - now % l.window_ms;
    let count = match state {
        Some(State::FixedWindow { start: s, count }) if *s == start => *count,
        _ => 0,
    };
    let reset = start + l.window_ms - now;
    if count < l.limit {
        let decision = Decision {
            allowed: true,
            limit: l.limit,
            remaining: l.limit - count - 1,
            retry_after_ms: 0,
            reset_ms: reset,
        };
        (
            decision,
            Some(State::FixedWindow {
                start,
                count: count + 1,
            }),
        )
    } else {
        let decision = Decision {
            allowed: false,
            limit: l.limit,
            remaining: 0,
            retry_after_ms: reset,
            reset_ms: reset,
        };
        (decision, None)
    }
}

fn sliding_log(state: Option<&State>, now: u64, l: &Limit) -> (Decision, Option<State>) {
    let mut log: Vec<u64> = match state {
        Some(State::SlidingLog { log }) => log
            .iter()
            .copied()
            .filter(|t| t.saturating_add(l.window_ms) > now)
            .collect(),
        _ => Vec::new(),
    };
    let used = log.len() as u64;
    if used < l.limit {
        log.push(now);
        let oldest = log.first().copied().unwrap_or(now);
        let decision = Decision {
            allowed: true,
            limit: l.limit,
            remaining: l.limit - used - 1,
            retry_after_ms: 0,
            reset_ms: (oldest + l.window_ms).saturating_sub(now),
        };
        (decision, Some(State::SlidingLog { log }))
    } else {
        // The request is admitted once enough of the oldest have left.
        let freeing = log[(used - l.limit) as usize];
        let decision = Decision {
            allowed: false,
            limit: l.limit,
            remaining: 0,
            retry_after_ms: (freeing + l.window_ms).saturating_sub(now),
            reset_ms: log
                .last()
                .map_or(0, |t| (t + l.window_ms).saturating_sub(now)),
        };
        (decision, None)
    }
}

fn sliding_window(state: Option<&State>, now: u64, l: &Limit) -> (Decision, Option<State>) {
    let w = l.window_ms;
    let start = now - now % w;
    let (current, previous) = match state {
        Some(State::SlidingWindow {
            start: s,
            current,
            previous,
        }) => {
            if *s == start {
                (*current, *previous)
            } else if *s + w == start {
                (0, *current)
            } else {
                (0, 0)
            }
        }
        _ => (0, 0),
    };
    let elapsed = now - start;
    // estimate × w = previous × (w − elapsed) + current × w, kept in integers.
    let weighted = |elapsed: u64, previous: u64, current: u64| {
        previous as u128 * (w - elapsed) as u128 + current as u128 * w as u128
    };
    let budget = l.limit as u128 * w as u128;
    let used = weighted(elapsed, previous, current);
    if used + w as u128 <= budget {
        let after = used + w as u128;
        let decision = Decision {
            allowed: true,
            limit: l.limit,
            remaining: ((budget - after) / w as u128) as u64,
            retry_after_ms: 0,
            reset_ms: (start + w - now) + w,
        };
        (
            decision,
            Some(State::SlidingWindow {
                start,
                current: current + 1,
                previous,
            }),
        )
    } else {
        let decision = Decision {
            allowed: false,
            limit: l.limit,
            remaining: 0,
            retry_after_ms: sliding_wait(elapsed, previous, current, l),
            reset_ms: (start + w - now) + w,
        };
        (decision, None)
    }
}

/// The wait until `previous × (w − e) / w + current + 1 ≤ limit`, in this
/// window if the previous window's weight can fall far enough, else in the
/// next one (where this window's count becomes the previous).
fn sliding_wait(elapsed: u64, previous: u64, current: u64, l: &Limit) -> u64 {
    let w = l.window_ms as u128;
    let need = |previous: u64, current: u64| -> Option<u128> {
        // Smallest e in [0, w) with previous × (w − e) ≤ (limit − current − 1) × w.
        let room = (l.limit as u128).checked_sub(current as u128 + 1)? * w;
        let p = previous as u128;
        if p * w <= room {
            return Some(0);
        }
        let e = w - room / p.max(1);
        (e < w).then_some(e)
    };
    if let Some(e) = need(previous, current) {
        return (e.max(elapsed as u128) - elapsed as u128) as u64;
    }
    let to_next = w - elapsed as u128;
    match need(current, 0) {
        Some(e) => (to_next + e) as u64,
        // Even a whole window later the count would not fit: two windows.
        None => (to_next + w) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Algorithm; 5] = [
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
    ];

    /// Runs requests at the given times; returns the admission times and the
    /// refusals (time, retry_after).
    fn run(alg: Algorithm, l: &Limit, times: &[u64]) -> (Vec<u64>, Vec<(u64, u64)>, Option<State>) {
        let mut state = None;
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        for &t in times {
            let (d, next) = decide(alg, state.as_ref(), t, l);
            if d.allowed {
                admitted.push(t);
            } else {
                refused.push((t, d.retry_after_ms));
            }
            if let Some(s) = next {
                state = Some(s);
            }
        }
        (admitted, refused, state)
    }

    /// The most any interval [t, t + span] may hold under each algorithm.
    fn bound(alg: Algorithm, l: &Limit, span: u64) -> u64 {
        let refill = |per: u64| (span as u128 * l.limit as u128).div_ceil(per as u128) as u64;
        match alg {
            Algorithm::TokenBucket => l.burst + refill(l.window_ms),
            Algorithm::LeakyBucket => l.burst + refill(l.window_ms),
            Algorithm::SlidingLog => {
                if span < l.window_ms {
                    l.limit
                } else {
                    l.limit * (span / l.window_ms + 1)
                }
            }
            Algorithm::FixedWindow | Algorithm::SlidingWindow => l.limit * (span / l.window_ms + 2),
        }
    }

    fn limits() -> impl Strategy<Value = Limit> {
        (
            1u64..20,
            prop::sample::select(vec![10u64, 100, 1000, 60_000]),
            1u64..25,
        )
            .prop_map(|(limit, window_ms, burst)| Limit {
                limit,
                window_ms,
                burst,
            })
    }

    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(0u64..400, 1..300).prop_map(|gaps| {
            let mut t = 1_000_000u64;
            gaps.into_iter()
                .map(|g| {
                    // Mostly bursts (gap 0), sometimes long pauses.
                    t += if g < 250 { 0 } else { g * g };
                    t
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn no_algorithm_admits_more_than_its_rule_in_any_window(l in limits(), times in arrivals()) {
            for alg in ALL {
                let (admitted, _, _) = run(alg, &l, &times);
                for (i, &t0) in admitted.iter().enumerate() {
                    // Every window of one rule length that starts at an admission.
                    let in_window = admitted[i..].iter().take_while(|&&t| t < t0 + l.window_ms).count() as u64;
                    let allowed = match alg {
                        Algorithm::SlidingLog => l.limit,
                        Algorithm::FixedWindow | Algorithm::SlidingWindow => 2 * l.limit,
                        _ => bound(alg, &l, l.window_ms - 1),
                    };
                    prop_assert!(in_window <= allowed,
                        "{alg:?} {l:?}: {in_window} admitted in [{t0}, {t0}+{})", l.window_ms);
                }
                if matches!(alg, Algorithm::FixedWindow | Algorithm::SlidingWindow) {
                    // Within one aligned window, never more than the limit.
                    let mut per_window = std::collections::HashMap::new();
                    for t in &admitted {
                        *per_window.entry(t / l.window_ms).or_insert(0u64) += 1;
                    }
                    prop_assert!(per_window.values().all(|&n| n <= l.limit), "{alg:?} {l:?}");
                }
            }
        }

        #[test]
        fn a_refused_request_is_admitted_after_retry_after(l in limits(), times in arrivals()) {
            for alg in ALL {
                let mut state = None;
                for &t in &times {
                    let (d, next) = decide(alg, state.as_ref(), t, &l);
                    if !d.allowed {
                        prop_assert!(d.retry_after_ms > 0, "{alg:?}: refused with no wait");
                        let (later, _) = decide(alg, state.as_ref(), t + d.retry_after_ms, &l);
                        prop_assert!(later.allowed, "{alg:?} {l:?}: still refused {} ms later", d.retry_after_ms);
                        // And not much earlier, for the exact algorithms.
                        if d.retry_after_ms > 1 && alg != Algorithm::SlidingWindow {
                            let (sooner, _) = decide(alg, state.as_ref(), t + d.retry_after_ms - 2, &l);
                            prop_assert!(!sooner.allowed, "{alg:?} {l:?}: retry_after {} too long", d.retry_after_ms);
                        }
                    }
                    if let Some(s) = next {
                        state = Some(s);
                    }
                }
            }
        }

        #[test]
        fn a_full_quota_returns_after_an_idle_stretch(l in limits(), times in arrivals()) {
            for alg in ALL {
                let (_, _, state) = run(alg, &l, &times);
                let last = *times.last().unwrap_or(&0);
                let idle = last + 2 * l.window_ms + l.window_ms * l.burst;
                let quota = match alg {
                    Algorithm::TokenBucket | Algorithm::LeakyBucket => l.burst,
                    _ => l.limit,
                };
                let burst = vec![idle; quota as usize + 1];
                let (admitted, _, _) = {
                    let mut s = state.clone();
                    let mut admitted = Vec::new();
                    for &t in &burst {
                        let (d, next) = decide(alg, s.as_ref(), t, &l);
                        if d.allowed { admitted.push(t); }
                        if let Some(n) = next { s = Some(n); }
                    }
                    (admitted, (), ())
                };
                prop_assert_eq!(admitted.len() as u64, quota, "{:?} {:?}", alg, l);
            }
        }

        #[test]
        fn remaining_counts_down_to_the_refusal(l in limits()) {
            for alg in ALL {
                let mut state = None;
                let (first, next) = decide(alg, None, 5_000_000, &l);
                prop_assert!(first.allowed);
                state = next.or(state);
                let mut expected = first.remaining;
                for _ in 0..first.remaining {
                    let (d, next) = decide(alg, state.as_ref(), 5_000_000, &l);
                    prop_assert!(d.allowed, "{alg:?} {l:?}");
                    prop_assert_eq!(d.remaining, expected - 1);
                    expected -= 1;
                    state = next.or(state);
                }
                let (last, _) = decide(alg, state.as_ref(), 5_000_000, &l);
                prop_assert!(!last.allowed, "{alg:?} {l:?}: admitted past remaining = 0");
            }
        }
    }

    #[test]
    fn a_token_bucket_refills_at_its_rate() {
        let l = Limit {
            limit: 10,
            window_ms: 1000,
            burst: 5,
        };
        let (admitted, _, _) = run(Algorithm::TokenBucket, &l, &[0; 8]);
        assert_eq!(admitted.len(), 5);
        let (d, _) = decide(
            Algorithm::TokenBucket,
            Some(&State::TokenBucket { micro: 0, at: 0 }),
            0,
            &l,
        );
        assert_eq!(d.retry_after_ms, 100);
    }

    #[test]
    fn a_clock_behind_does_not_refill_twice() {
        let l = Limit {
            limit: 10,
            window_ms: 1000,
            burst: 1,
        };
        // Instance A (clock at 1000) took the last token; instance B, its
        // clock 500 ms behind, refills nothing and keeps the later time.
        let spent = State::TokenBucket { micro: 0, at: 1000 };
        let (d, next) = decide(Algorithm::TokenBucket, Some(&spent), 500, &l);
        assert!(!d.allowed);
        assert!(next.is_none(), "a refusal writes nothing");
        // A token is back 100 ms after A's time: 600 ms on B's clock.
        assert_eq!(d.retry_after_ms, 600);
        let half = State::TokenBucket {
            micro: MICRO as u64,
            at: 1000,
        };
        let (d, next) = decide(Algorithm::TokenBucket, Some(&half), 500, &l);
        assert!(d.allowed);
        // Back on A's clock, 50 ms later: half a token, not a refill from 500.
        let (d, _) = decide(Algorithm::TokenBucket, next.as_ref(), 1050, &l);
        assert!(!d.allowed, "the stored time did not move back");
    }

    #[test]
    fn a_state_of_another_algorithm_counts_as_none() {
        let l = Limit {
            limit: 1,
            window_ms: 1000,
            burst: 1,
        };
        let foreign = State::Gcra {
            tat_us: u64::MAX / 2,
        };
        let (d, _) = decide(Algorithm::FixedWindow, Some(&foreign), 10, &l);
        assert!(d.allowed);
    }
}
