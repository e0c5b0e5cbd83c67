//! The little Linux plumbing a load test needs: the open-files limit, a
//! process's CPU time and memory from `/proc`, and children that die with
//! their parent.

use std::io;

/// Raises this process's soft open-files limit to its hard limit (children
/// inherit it) and returns the new soft limit. Each connection is one file.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok(limit.rlim_cur)
}

/// Kernel clock ticks per second, the unit of `/proc/PID/stat` CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident memory since the process started (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&stat, &status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}"),
        )
    })
}

fn parse(stat: &str, status: &str) -> Option<ProcSample> {
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after its closing parenthesis start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?; // field 14
    let stime: u64 = fields.get(12)?.parse().ok()?; // field 15
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
    })
}

/// CPU ticks the whole machine has spent busy (everything but idle and
/// iowait), summed over all cores, from `/proc/stat`: to tell how much of the
/// machine other programs took during a step.
pub fn machine_busy_ticks() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/stat"))
}

fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4);
    Some(busy.map(|(_, v)| v).sum())
}

/// Arranges for a child to get SIGTERM when this process dies, so neither
/// the relay nor a client process outlives an interrupted run.
pub fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks a process to stop (SIGTERM), as an operator would.
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_even_with_odd_command_names() {
        let stat = "4242 (cue relay) (x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 3 0 100 1000 200";
        let status = "Name:\tcue-relay\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(
            parse(stat, status),
            Some(ProcSample {
                cpu_ticks: 175,
                rss_kib: 10240,
                peak_rss_kib: 20480,
            })
        );
        assert_eq!(parse("garbage", status), None);
        let proc_stat = "cpu  100 5 50 1000 20 1 2 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\n";
        assert_eq!(parse_machine_busy(proc_stat), Some(158));
    }

    #[test]
    fn reads_its_own_process() {
        let me = sample(std::process::id()).unwrap_or_default();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib, "{me:?}");
        assert!(raise_open_files_limit().unwrap_or(0) > 0);
    }
}
