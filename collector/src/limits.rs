//! The process's open-files limit. The engine holds a descriptor per tailed container (and up to
//! eight more per container for deleted files a lagging drain still reads), plus sockets per
//! drain, so the usual soft limit of 1024 is too low for a busy node: it is raised at start
//! toward the hard limit, up to [`OPEN_FILES_CAP`].

use std::io;

/// The highest soft limit asked for, whatever the hard limit allows.
pub const OPEN_FILES_CAP: u64 = 1 << 20;

/// Raise the soft `RLIMIT_NOFILE` to `min(hard, OPEN_FILES_CAP)` (never lowering it); the limit
/// now in force.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = limit.rlim_max.min(OPEN_FILES_CAP).max(limit.rlim_cur);
    if wanted == limit.rlim_cur {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit whose soft limit does not exceed its hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_within_the_hard_limit_and_the_cap() {
        let limit = raise_open_files().expect("getrlimit/setrlimit");
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, limit);
        assert!(limit <= now.rlim_max);
        assert!(limit >= now.rlim_max.min(OPEN_FILES_CAP));
    }
}
