//! Restart strategies: what to do when a dataflow fails while running.
//! The names and defaults follow Apache Flink:
//!
//! - `exponential-backoff` (the default): wait 1 s, then 1.5 times longer
//!   after each failure up to 60 s, with ±10 % jitter; the delay resets after
//!   an hour without failure. It never gives up.
//! - `fixed-delay`: restart after `delay`, at most `attempts` times.
//! - `failure-rate`: restart after `delay` unless more than `max_failures`
//!   happened within `interval`.
//! - `none`: never restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A restart strategy and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Growing delays, never gives up.
    ExponentialBackoff {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        jitter: f64,
        reset_after: Duration,
    },
    /// `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// Gives up past `max_failures` failures within `interval`.
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
    /// Fail at the first error.
    None,
}

impl Default for RestartStrategy {
    fn default() -> Self {
        RestartStrategy::ExponentialBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            jitter: 0.1,
            reset_after: Duration::from_secs(3600),
        }
    }
}

fn duration(
    options: &BTreeMap<String, String>,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|e| format!("invalid value for {key}: \"{v}\" ({e})")),
    }
}

fn number<T: std::str::FromStr>(
    options: &BTreeMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, String> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid value for {key}: \"{v}\"")),
    }
}

impl RestartStrategy {
    /// The strategy named by `restart_strategy` in `options` (keys in lower
    /// case), with its settings; other strategy keys:
    /// `initial_backoff`, `max_backoff`, `backoff_multiplier`, `jitter`,
    /// `reset_backoff_after` (exponential-backoff), `attempts`, `delay`
    /// (fixed-delay; `delay` also for failure-rate), `max_failures`,
    /// `failure_interval` (failure-rate). Without `restart_strategy`,
    /// `fallback`.
    pub fn from_options(
        options: &BTreeMap<String, String>,
        fallback: &RestartStrategy,
    ) -> Result<Self, String> {
        let Some(name) = options.get("restart_strategy") else {
            return Ok(fallback.clone());
        };
        Self::named(name, options)
    }

    /// The strategy called `name` with settings from `options`.
    pub fn named(name: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "exponential-backoff" | "exponential-delay" => {
                let RestartStrategy::ExponentialBackoff {
                    initial,
                    max,
                    multiplier,
                    jitter,
                    reset_after,
                } = RestartStrategy::default()
                else {
                    return Err("no default".into());
                };
                let s = RestartStrategy::ExponentialBackoff {
                    initial: duration(options, "initial_backoff", initial)?,
                    max: duration(options, "max_backoff", max)?,
                    multiplier: number(options, "backoff_multiplier", multiplier)?,
                    jitter: number(options, "jitter", jitter)?,
                    reset_after: duration(options, "reset_backoff_after", reset_after)?,
                };
                if let RestartStrategy::ExponentialBackoff {
                    multiplier, jitter, ..
                } = &s
                {
                    if multiplier.is_nan() || *multiplier < 1.0 || !(0.0..=1.0).contains(jitter) {
                        return Err("backoff_multiplier must be >= 1 and jitter in [0, 1]".into());
                    }
                }
                Ok(s)
            }
            "fixed-delay" => Ok(RestartStrategy::FixedDelay {
                attempts: number(options, "attempts", 3)?,
                delay: duration(options, "delay", Duration::from_secs(1))?,
            }),
            "failure-rate" => Ok(RestartStrategy::FailureRate {
                max_failures: number(options, "max_failures", 1)?,
                interval: duration(options, "failure_interval", Duration::from_secs(60))?,
                delay: duration(options, "delay", Duration::from_secs(1))?,
            }),
            "none" | "no-restart" | "disable" => Ok(RestartStrategy::None),
            other => Err(format!(
                "unknown restart strategy \"{other}\" (expected exponential-backoff, fixed-delay, failure-rate or none)"
            )),
        }
    }

    /// A short description, as the system view shows it.
    pub fn describe(&self) -> String {
        match self {
            RestartStrategy::ExponentialBackoff {
                initial,
                max,
                multiplier,
                ..
            } => format!(
                "exponential-backoff(initial={}, max={}, multiplier={multiplier})",
                humantime::format_duration(*initial),
                humantime::format_duration(*max)
            ),
            RestartStrategy::FixedDelay { attempts, delay } => format!(
                "fixed-delay(attempts={attempts}, delay={})",
                humantime::format_duration(*delay)
            ),
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => format!(
                "failure-rate(max_failures={max_failures}, interval={}, delay={})",
                humantime::format_duration(*interval),
                humantime::format_duration(*delay)
            ),
            RestartStrategy::None => "none".into(),
        }
    }
}

/// Applies a strategy to a dataflow's failures.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    /// Restarts granted so far (all time).
    restarts: u32,
    /// Failure times within the failure-rate window.
    recent: Vec<Instant>,
    backoff: Option<Duration>,
    last_failure: Option<Instant>,
    seed: u64,
}

impl RestartTracker {
    /// A tracker for `strategy`.
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            recent: Vec::new(),
            backoff: None,
            last_failure: None,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> &RestartStrategy {
        &self.strategy
    }

    /// Restarts granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// A cheap deterministic jitter source in [-1, 1].
    fn next_unit(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 2_000_001) as f64 / 1_000_000.0 - 1.0
    }

    /// A failure happened at `now`: the delay before restarting, or `None`
    /// when the strategy gives up.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let previous = self.last_failure.replace(now);
        let delay = match self.strategy.clone() {
            RestartStrategy::None => return None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.restarts >= attempts {
                    return None;
                }
                delay
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.recent.push(now);
                self.recent
                    .retain(|t| now.saturating_duration_since(*t) <= interval);
                if self.recent.len() as u32 > max_failures {
                    return None;
                }
                delay
            }
            RestartStrategy::ExponentialBackoff {
                initial,
                max,
                multiplier,
                jitter,
                reset_after,
            } => {
                let quiet = previous
                    .map(|p| now.saturating_duration_since(p) >= reset_after)
                    .unwrap_or(true);
                let base = match self.backoff {
                    Some(b) if !quiet => b.mul_f64(multiplier).min(max),
                    _ => initial,
                };
                self.backoff = Some(base);
                let factor = 1.0 + jitter * self.next_unit();
                base.mul_f64(factor.max(0.0))
            }
        };
        self.restarts += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exponential_backoff_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::default());
        let start = Instant::now();
        let mut delays = Vec::new();
        for i in 0..20 {
            delays.push(t.on_failure(start + Duration::from_secs(i)).unwrap());
        }
        assert!(
            delays[0] >= Duration::from_millis(900) && delays[0] <= Duration::from_millis(1100)
        );
        assert!(
            delays[1] >= Duration::from_millis(1350) && delays[1] <= Duration::from_millis(1650)
        );
        assert!(delays[19] <= Duration::from_secs(66) && delays[19] >= Duration::from_secs(54));
        // An hour later the delay starts over.
        let d = t
            .on_failure(start + Duration::from_secs(20 + 3600))
            .unwrap();
        assert!(d <= Duration::from_millis(1100), "{d:?}");
        assert_eq!(t.restarts(), 21);
    }

    #[test]
    fn fixed_delay_gives_up_after_attempts() {
        let s = RestartStrategy::named(
            "fixed-delay",
            &opts(&[("attempts", "2"), ("delay", "10ms")]),
        )
        .unwrap();
        let mut t = RestartTracker::new(s);
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(10)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(10)));
        assert_eq!(t.on_failure(now), None);
    }

    #[test]
    fn failure_rate_counts_within_interval() {
        let s = RestartStrategy::named(
            "failure-rate",
            &opts(&[
                ("max_failures", "2"),
                ("failure_interval", "10s"),
                ("delay", "0s"),
            ]),
        )
        .unwrap();
        let mut t = RestartTracker::new(s);
        let now = Instant::now();
        assert!(t.on_failure(now).is_some());
        assert!(t.on_failure(now + Duration::from_secs(1)).is_some());
        // Old failures leave the window.
        assert!(t.on_failure(now + Duration::from_secs(30)).is_some());
        assert!(t.on_failure(now + Duration::from_secs(31)).is_some());
        assert!(t.on_failure(now + Duration::from_secs(32)).is_none());
    }

    #[test]
    fn options_are_checked() {
        assert!(RestartStrategy::named("sometimes", &opts(&[])).is_err());
        assert!(RestartStrategy::named("fixed-delay", &opts(&[("delay", "soon")])).is_err());
        let d = RestartStrategy::default();
        assert_eq!(RestartStrategy::from_options(&opts(&[]), &d).unwrap(), d);
    }
}
