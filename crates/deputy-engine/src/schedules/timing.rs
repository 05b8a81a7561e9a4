//! When a schedule's ticks fall, and which of the ticks that came due a firing runs.
//!
//! Cron patterns are read by `croner` on `jiff` zoned times, so a pattern means wall
//! clock time in its zone across daylight-saving changes: a fixed-time tick (such as
//! `30 2 * * *`) that falls in a spring-forward gap runs once, at the first instant after
//! the gap, and one that falls in a fall-back repeat runs once, at its first occurrence;
//! interval patterns (`*/15 * * * *`) tick in real time through both.

use std::str::FromStr;

use croner::Cron;
use deputy_core::schedule::{MISSED_GRACE_MS, MissedPolicy, Trigger};
use deputy_core::time::Millis;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A parsed trigger, ready to compute ticks.
#[derive(Debug, Clone)]
pub enum Ticker {
    Cron { cron: Box<Cron>, tz: TimeZone },
    Every { ms: u64, anchor: Millis },
}

/// A pattern or zone that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerError {
    pub field: &'static str,
    pub message: String,
}

impl Ticker {
    pub fn new(trigger: &Trigger) -> Result<Ticker, TriggerError> {
        match trigger {
            Trigger::Cron { pattern, tz } => {
                let cron = Cron::from_str(pattern).map_err(|e| TriggerError {
                    field: "cron",
                    message: format!(
                        "`{pattern}` is not a cron pattern ({e}); write 5 fields, minute hour day-of-month month day-of-week, such as \"*/5 * * * *\""
                    ),
                })?;
                let tz = TimeZone::get(tz).map_err(|_| TriggerError {
                    field: "tz",
                    message: format!(
                        "unknown time zone `{tz}`: use an IANA name such as Europe/Berlin or UTC"
                    ),
                })?;
                let ticker = Ticker::Cron {
                    cron: Box::new(cron),
                    tz,
                };
                // A pattern that can never match (`0 0 31 2 *`) is refused up front.
                if ticker.next_after(0).is_none() {
                    return Err(TriggerError {
                        field: "cron",
                        message: format!("`{pattern}` never matches a date"),
                    });
                }
                Ok(ticker)
            }
            Trigger::Every { ms, anchor } => Ok(Ticker::Every {
                ms: (*ms).max(1),
                anchor: *anchor,
            }),
        }
    }

    /// The first tick strictly after `t` (Unix ms); None when there is none.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match self {
            Ticker::Every { ms, anchor } => {
                let ms = i64::try_from(*ms).ok()?;
                if t < *anchor {
                    return Some(*anchor);
                }
                let passed = (t - anchor) / ms + 1;
                anchor.checked_add(passed.checked_mul(ms)?)
            }
            Ticker::Cron { cron, tz } => {
                let start = Zoned::new(Timestamp::from_millisecond(t).ok()?, tz.clone());
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// What one firing of a schedule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Ticks to submit a run for, oldest first.
    pub run: Vec<Millis>,
    /// Ticks that came due and submit nothing.
    pub skipped: u64,
    /// The first tick after `now`: the schedule's new next fire time.
    pub next: Option<Millis>,
}

/// Ticks looked at one by one at most; beyond this (a long downtime of a frequent
/// schedule) the search jumps to the ticks just before `now`, and the count of skipped
/// ticks is exact for `every` and a lower bound for cron.
const MAX_TICKS_SCANNED: u64 = 100_000;

impl Ticker {
    /// The latest tick at or before `t`.
    fn at_or_before(&self, t: Millis) -> Option<Millis> {
        match self {
            Ticker::Every { ms, anchor } => {
                let ms = i64::try_from(*ms).ok()?;
                (t >= *anchor).then(|| anchor + (t - anchor) / ms * ms)
            }
            Ticker::Cron { cron, tz } => {
                let start = Zoned::new(Timestamp::from_millisecond(t).ok()?, tz.clone());
                let prev = cron.find_previous_occurrence(&start, true).ok()?;
                Some(prev.timestamp().as_millisecond())
            }
        }
    }

    /// Up to `n` ticks in (after, until], newest last.
    fn latest_in(&self, after: Millis, until: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
        let mut at = until;
        while out.len() < n {
            match self.at_or_before(at) {
                Some(t) if t > after => {
                    out.push(t);
                    at = t - 1;
                }
                _ => break,
            }
        }
        out.reverse();
        out
    }
}

/// Plans the firing of a schedule whose next tick, `due`, is at or before `now`.
///
/// The latest due tick runs if it is on time (at most [`MISSED_GRACE_MS`] late); the
/// others were missed and follow `missed`: `skip` runs none of them, `run-once` lets one
/// run stand for them all, `catch-up` runs the latest `catch_up_limit` ticks.
pub fn plan(
    ticker: &Ticker,
    due: Millis,
    now: Millis,
    missed: MissedPolicy,
    catch_up_limit: u32,
) -> FirePlan {
    let keep = catch_up_limit.max(1) as usize;
    // The latest due ticks (at most `keep`), oldest first, and how many came due.
    let mut latest = std::collections::VecDeque::from([due]);
    let mut count: u64 = 1;
    let mut at = due;
    let next = loop {
        if count >= MAX_TICKS_SCANNED {
            let tail = ticker.latest_in(at, now, keep);
            count += match ticker {
                Ticker::Every { ms, .. } => tail
                    .last()
                    .map_or(0, |last| ((last - at) / (*ms).max(1) as i64) as u64),
                Ticker::Cron { .. } => tail.len() as u64,
            };
            for t in tail {
                latest.push_back(t);
                if latest.len() > keep {
                    latest.pop_front();
                }
            }
            break ticker.next_after(now);
        }
        match ticker.next_after(at) {
            Some(t) if t <= now => {
                count += 1;
                latest.push_back(t);
                if latest.len() > keep {
                    latest.pop_front();
                }
                at = t;
            }
            other => break other,
        }
    };
    let newest = *latest.back().expect("at least the due tick");
    let on_time = now - newest <= MISSED_GRACE_MS;
    let run: Vec<Millis> = match missed {
        MissedPolicy::Skip if on_time => vec![newest],
        MissedPolicy::Skip => Vec::new(),
        MissedPolicy::RunOnce => vec![newest],
        MissedPolicy::CatchUp => latest.into_iter().collect(),
    };
    FirePlan {
        skipped: count - run.len() as u64,
        run,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn cron(pattern: &str, tz: &str) -> Ticker {
        Ticker::new(&Trigger::Cron {
            pattern: pattern.into(),
            tz: tz.into(),
        })
        .unwrap()
    }

    fn at(tz: &str, y: i16, m: i8, d: i8, h: i8, min: i8) -> Millis {
        date(y, m, d)
            .at(h, min, 0, 0)
            .in_tz(tz)
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    /// Ticks in [from, to).
    fn ticks(t: &Ticker, from: Millis, to: Millis) -> Vec<Millis> {
        let mut out = Vec::new();
        let mut now = from - 1;
        while let Some(next) = t.next_after(now) {
            if next >= to {
                break;
            }
            out.push(next);
            now = next;
        }
        out
    }

    fn local(t: Millis, tz: &str) -> String {
        Timestamp::from_millisecond(t)
            .unwrap()
            .in_tz(tz)
            .unwrap()
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    const BERLIN: &str = "Europe/Berlin";

    #[test]
    fn a_2_30_schedule_fires_once_on_the_spring_forward_day() {
        // 2026-03-29: Berlin's clocks jump from 02:00 to 03:00; 02:30 does not exist.
        let t = cron("30 2 * * *", BERLIN);
        let day = ticks(
            &t,
            at(BERLIN, 2026, 3, 29, 0, 0),
            at(BERLIN, 2026, 3, 30, 0, 0),
        );
        let shown: Vec<_> = day.iter().map(|&t| local(t, BERLIN)).collect();
        assert_eq!(day.len(), 1, "{shown:?}");
        assert_eq!(shown[0], "2026-03-29 03:00 CEST", "{shown:?}");
        // The days around it are ordinary.
        let before = ticks(
            &t,
            at(BERLIN, 2026, 3, 28, 0, 0),
            at(BERLIN, 2026, 3, 29, 0, 0),
        );
        assert_eq!(local(before[0], BERLIN), "2026-03-28 02:30 CET");
    }

    #[test]
    fn a_2_30_schedule_fires_once_on_the_fall_back_day() {
        // 2026-10-25: Berlin's clocks go from 03:00 back to 02:00; 02:30 happens twice.
        let t = cron("30 2 * * *", BERLIN);
        let from = at(BERLIN, 2026, 10, 25, 0, 0);
        let day = ticks(&t, from, from + 25 * 3600 * 1000);
        let on_day: Vec<_> = day
            .iter()
            .map(|&t| local(t, BERLIN))
            .filter(|s| s.starts_with("2026-10-25"))
            .collect();
        assert_eq!(on_day, vec!["2026-10-25 02:30 CEST".to_string()]);
    }

    #[test]
    fn an_interval_pattern_ticks_in_real_time_through_both_changes() {
        let t = cron("*/30 * * * *", BERLIN);
        // The spring day has 23 hours, the autumn day 25.
        let spring = ticks(
            &t,
            at(BERLIN, 2026, 3, 29, 0, 0),
            at(BERLIN, 2026, 3, 30, 0, 0),
        );
        assert_eq!(spring.len(), 46);
        let autumn = ticks(
            &t,
            at(BERLIN, 2026, 10, 25, 0, 0),
            at(BERLIN, 2026, 10, 26, 0, 0),
        );
        assert_eq!(autumn.len(), 50);
        for w in autumn.windows(2) {
            assert_eq!(
                w[1] - w[0],
                30 * 60 * 1000,
                "ticks are 30 real minutes apart"
            );
        }
    }

    #[test]
    fn cron_is_read_in_its_zone() {
        let t = cron("0 2 * * *", "America/New_York");
        let next = t.next_after(at("UTC", 2026, 1, 10, 12, 0)).unwrap();
        assert_eq!(local(next, "UTC"), "2026-01-11 07:00 UTC");
    }

    #[test]
    fn bad_patterns_and_zones_are_refused_with_the_field() {
        let err = |p: &str, tz: &str| {
            Ticker::new(&Trigger::Cron {
                pattern: p.into(),
                tz: tz.into(),
            })
            .unwrap_err()
        };
        assert_eq!(err("61 * * * *", "UTC").field, "cron");
        assert_eq!(err("every day", "UTC").field, "cron");
        assert_eq!(err("0 0 31 2 *", "UTC").field, "cron");
        assert_eq!(err("* * * * *", "Mars/Olympus").field, "tz");
    }

    #[test]
    fn every_counts_from_its_anchor() {
        let t = Ticker::Every {
            ms: 1000,
            anchor: 10_500,
        };
        assert_eq!(t.next_after(0), Some(10_500));
        assert_eq!(t.next_after(10_500), Some(11_500));
        assert_eq!(t.next_after(11_499), Some(11_500));
        assert_eq!(t.upcoming(10_500, 3), vec![11_500, 12_500, 13_500]);
    }

    fn every_minute() -> Ticker {
        Ticker::Every {
            ms: 60_000,
            anchor: 0,
        }
    }

    #[test]
    fn an_on_time_tick_runs_under_every_policy() {
        for policy in [
            MissedPolicy::Skip,
            MissedPolicy::RunOnce,
            MissedPolicy::CatchUp,
        ] {
            let p = plan(&every_minute(), 600_000, 600_050, policy, 10);
            assert_eq!(p.run, vec![600_000], "{policy:?}");
            assert_eq!(p.skipped, 0);
            assert_eq!(p.next, Some(660_000));
        }
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        // Down from just before 10:00 until 10:30:30; ticks every minute from 10:00.
        let (due, now) = (600_000, 600_000 + 30 * 60_000 + 30_000);
        let t = every_minute();
        // The 10:30 tick is 30 s late: on time. The 30 before it were missed.
        let skip = plan(&t, due, now, MissedPolicy::Skip, 10);
        assert_eq!(
            (skip.run.clone(), skip.skipped),
            (vec![due + 30 * 60_000], 30)
        );
        let once = plan(&t, due, now, MissedPolicy::RunOnce, 10);
        assert_eq!(
            (once.run.clone(), once.skipped),
            (vec![due + 30 * 60_000], 30)
        );
        let catch = plan(&t, due, now, MissedPolicy::CatchUp, 5);
        let want: Vec<_> = (26..=30).map(|k| due + k * 60_000).collect();
        assert_eq!((catch.run.clone(), catch.skipped), (want, 26));
        for p in [skip, once, catch] {
            assert_eq!(p.next, Some(due + 31 * 60_000));
        }
        // Every 5 minutes, up again 2 minutes after a tick: nothing is on time, so skip
        // runs nothing and run-once runs the missed tick.
        let five = Ticker::Every {
            ms: 300_000,
            anchor: 0,
        };
        let skip = plan(&five, 300_000, 420_000, MissedPolicy::Skip, 10);
        assert_eq!(
            (skip.run, skip.skipped, skip.next),
            (vec![], 1, Some(600_000))
        );
        let once = plan(&five, 300_000, 420_000, MissedPolicy::RunOnce, 10);
        assert_eq!((once.run, once.skipped), (vec![300_000], 0));
    }

    #[test]
    fn a_very_long_downtime_runs_the_latest_ticks_without_listing_every_one() {
        let t = Ticker::Every {
            ms: 1000,
            anchor: 0,
        };
        let now = 10 * 24 * 3600 * 1000; // ten days of one-second ticks
        let p = plan(&t, 0, now, MissedPolicy::CatchUp, 3);
        assert_eq!(p.run, vec![now - 2000, now - 1000, now]);
        assert_eq!(p.skipped + 3, now as u64 / 1000 + 1);
        assert_eq!(p.next, Some(now + 1000));
        let c = cron("* * * * * *", "UTC");
        let p = plan(&c, 0, now, MissedPolicy::CatchUp, 2);
        assert_eq!(p.run, vec![now - 1000, now]);
        assert!(p.skipped >= MAX_TICKS_SCANNED);
        assert_eq!(p.next, Some(now + 1000));
    }
}
