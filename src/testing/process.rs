//! Service processes that live exactly as long as the test process.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;

/// Spawns `command` from a dedicated thread that never exits, with `PR_SET_PDEATHSIG` set
/// to `signal`, so the service stops when the test process ends however it ends. (The death
/// signal follows the *thread* that spawned the child, which is why the thread is kept.)
pub fn spawn_for_process_lifetime(
    mut command: Command,
    signal: i32,
    name: &str,
) -> Result<(), String> {
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
            let child = match command.spawn() {
                Ok(child) => {
                    let _ = tx.send(Ok(()));
                    child
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("spawning {program}: {e}")));
                    return;
                }
            };
            let _keep = child;
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawning the {name} thread: {e}"))?;
    rx.recv().map_err(|e| e.to_string())?
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
