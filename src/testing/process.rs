//! Service processes that live exactly as long as the test process.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;

/// Spawns `command` from a dedicated thread that never exits, with `PR_SET_PDEATHSIG` set
/// to `signal`, so the service stops when the test process ends however it ends. (The death
/// signal follows the *thread* that spawned the child, which is why the thread is kept.)
/// The thread reaps the child when it exits, so [`stop_process`] can tell it is gone.
/// Returns the child's pid.
pub fn spawn_for_process_lifetime(
    mut command: Command,
    signal: i32,
    name: &str,
) -> Result<u32, String> {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => {
                    let _ = tx.send(Ok(child.id()));
                    child
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("spawning {program}: {e}")));
                    return;
                }
            };
            let _ = child.wait();
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawning the {name} thread: {e}"))?;
    rx.recv().map_err(|e| e.to_string())?
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

/// Sends `signal` to a process started by [`spawn_for_process_lifetime`] and waits up to
/// `limit` for it to be gone; whether it is.
pub fn stop_process(pid: u32, signal: i32, limit: std::time::Duration) -> bool {
    let pid = pid as libc::pid_t;
    // SAFETY: plain signal calls on a pid this process started (reaped only by its thread).
    unsafe {
        libc::kill(pid, signal);
    }
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// The peak resident set size of this process so far (`VmHWM`), in MiB; 0 where
/// `/proc/self/status` cannot be read.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The `java` binary: `$JAVA_HOME/bin/java`, else the first `java` on `PATH`.
pub(crate) fn java() -> Option<std::path::PathBuf> {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if std::path::Path::new(&home).join("bin/java").is_file() => {
            Some(std::path::Path::new(&home).join("bin/java"))
        }
        _ => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("java"))
                .find(|p| p.is_file())
        }),
    }
}
