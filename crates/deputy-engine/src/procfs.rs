//! What the kernel says about process groups, read from /proc. `kill(-pgid, 0)` is not
//! enough to tell whether a group is gone: it succeeds while members are zombies.

use std::fs;

/// One process as /proc/PID/stat describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub state: char,
    pub pgid: i32,
}

impl ProcInfo {
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn read_stat(pid: i32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `pid (comm) state ppid pgrp ...`; `comm` may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcInfo> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(ProcInfo { pid, state, pgid })
}

/// Live (non-zombie) members of process group `pgid`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .filter(|p| p.pgid == pgid && p.is_alive())
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid`'s environment says it belongs to task `task_id`. Used before killing
/// a process group recorded by a previous daemon life, in case the pid was reused.
pub fn has_task_marker(pid: i32, task_id: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let marker = format!("DEPUTY_TASK_ID={task_id}");
    env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let p = parse_stat("123 (a) b (c)) S 1 456 456 0 -1").unwrap();
        assert_eq!(
            p,
            ProcInfo {
                pid: 123,
                state: 'S',
                pgid: 456
            }
        );
        assert!(p.is_alive());
        assert!(!parse_stat("9 (z) Z 1 9 9").unwrap().is_alive());
    }

    #[test]
    fn sees_this_process() {
        let me = std::process::id() as i32;
        let info = read_stat(me).unwrap();
        assert!(live_members(info.pgid).contains(&me));
    }
}
