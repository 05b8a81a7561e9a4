//! Recurring schedules: checking a new one, and firing due ticks.

pub mod timing;
