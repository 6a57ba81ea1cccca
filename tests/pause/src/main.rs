//! `pause`: the first process of every pod sandbox on the test node (the
//! image containerd's `sandbox_image` names), like upstream's
//! `build/pause/linux/pause.c`: it holds the pod's namespaces open by
//! sleeping, reaps zombies (it is PID 1 of a shared PID namespace when a pod
//! asks for one) and exits 0 on SIGTERM or SIGINT. containerd stops sandboxes
//! with SIGKILL anyway. Built static so the image is `FROM scratch`.

use std::process::ExitCode;

extern "C" fn exit_now(_signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn reap(_signal: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Installs `handler` for `signal`; false when the kernel refuses.
fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int), flags: libc::c_int) -> bool {
    // SAFETY: a zeroed sigaction is a valid "no mask, no flags" value, and
    // both handlers only call async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
    }
}

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "-v" || a == "--version")
    {
        println!("sluice pause {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::process::id() != 1 {
        eprintln!("pause: warning: not running as PID 1 (it is meant to be a pod sandbox's first process)");
    }
    let installed = install(libc::SIGINT, exit_now, 0)
        && install(libc::SIGTERM, exit_now, 0)
        && install(libc::SIGCHLD, reap, libc::SA_NOCLDSTOP | libc::SA_RESTART);
    if !installed {
        eprintln!(
            "pause: cannot install signal handlers: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    loop {
        // SAFETY: pause has no preconditions; it returns after each handled signal.
        unsafe { libc::pause() };
    }
}
