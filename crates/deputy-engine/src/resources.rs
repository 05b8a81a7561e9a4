//! Resource admission: the scheduler starts nothing while available memory is under a
//! reserve or recent CPU use is over a threshold. Sampled once a second from the kernel
//! (load average alone lags, which let the seed system start a storm of processes).

use std::time::Duration;

use sysinfo::System;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceLimits {
    /// Start nothing while available memory is below this many bytes. None: no check.
    pub min_free_memory: Option<u64>,
    /// Start nothing while CPU use over the last sample is above this percentage.
    pub max_cpu_percent: Option<f32>,
}

impl ResourceLimits {
    pub fn is_off(&self) -> bool {
        self.min_free_memory.is_none() && self.max_cpu_percent.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    pub available_memory: u64,
    pub cpu_percent: f32,
}

impl Snapshot {
    /// Why a new task may not start now, if it may not.
    pub fn refusal(&self, limits: &ResourceLimits) -> Option<String> {
        if let Some(min) = limits.min_free_memory
            && self.available_memory < min
        {
            return Some(format!(
                "available memory {} is under the reserve {}",
                deputy_core::size::human_size(self.available_memory),
                deputy_core::size::human_size(min)
            ));
        }
        if let Some(max) = limits.max_cpu_percent
            && self.cpu_percent > max
        {
            return Some(format!(
                "CPU use {:.0}% is over {max:.0}%",
                self.cpu_percent
            ));
        }
        None
    }
}

/// Samples the machine every `every` until `stop`; the receiver always holds the latest.
pub fn monitor(every: Duration, stop: CancellationToken) -> watch::Receiver<Snapshot> {
    let (tx, rx) = watch::channel(Snapshot {
        available_memory: u64::MAX,
        cpu_percent: 0.0,
    });
    tokio::spawn(async move {
        let mut sys = match System::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%e, "cannot read system resources; admission checks are off");
                return;
            }
        };
        // CPU use is a difference between two samples; the first one only sets a base.
        sys.refresh_cpu_usage();
        let mut tick = tokio::time::interval(every.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            sys.refresh_memory();
            sys.refresh_cpu_usage();
            let snap = Snapshot {
                available_memory: sys.available_memory(),
                cpu_percent: sys.global_cpu_usage(),
            };
            if tx.send(snap).is_err() {
                break;
            }
        }
    });
    rx
}
