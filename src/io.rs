//! Writing files so that a crash or a full disk never leaves a half-written output behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

use anyhow::{Context, Result};

/// A temporary sibling of `path` (same folder, so the final rename is atomic).
fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Temporary files being written, as C strings for the signal handler ([`remove_temporary_files_on_signals`]):
/// a slot holds a path or null. Slots and atomics, because a signal handler may not take a lock or allocate.
const LIVE_SLOTS: usize = 64;
static LIVE: [AtomicPtr<libc::c_char>; LIVE_SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; LIVE_SLOTS];

/// Registers a temporary file for removal on SIGTERM, SIGINT or SIGHUP; the slot to release (None when every slot
/// is taken, or the path holds a NUL byte: the file is then only removed on errors, as before).
fn register_temporary(path: &Path) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
    let slot = LIVE.iter().position(|s| s.compare_exchange(std::ptr::null_mut(), raw, SeqCst, SeqCst).is_ok());
    if slot.is_none() {
        // SAFETY: `raw` came from `into_raw` just above and was not published.
        drop(unsafe { std::ffi::CString::from_raw(raw) });
    }
    slot
}

/// Releases a slot. The string is not freed: the handler may be reading it on another thread (a few dozen bytes
/// per file written).
fn release_temporary(slot: Option<usize>) {
    if let Some(slot) = slot {
        LIVE[slot].store(std::ptr::null_mut(), SeqCst);
    }
}

extern "C" fn remove_and_reraise(signal: libc::c_int) {
    for slot in &LIVE {
        let path = slot.load(SeqCst);
        if !path.is_null() {
            // SAFETY: a NUL-terminated string that is never freed; unlink is async-signal-safe.
            unsafe { libc::unlink(path) };
        }
    }
    // SAFETY: signal and raise are async-signal-safe; the default action then ends the process as the signal
    // would have (its exit status says which signal).
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Removes every temporary file being written when the process is stopped by SIGTERM, SIGINT (Ctrl-C) or SIGHUP,
/// then ends it as the signal would have: a stopped `grads` left its 248 MB `.gradients.safetensors.<pid>.tmp`
/// behind. (SIGKILL cannot be caught: the file then stays, and is never mistaken for a finished one.)
pub fn remove_temporary_files_on_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe { libc::signal(signal, remove_and_reraise as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// Lets `write` fill a temporary file next to `path`, then renames it into place. On error the temporary
/// file is removed and `path` is untouched; on SIGTERM or SIGINT too, when the command installed
/// [`remove_temporary_files_on_signals`].
pub fn atomic_write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    let tmp = temporary_sibling(path);
    let slot = register_temporary(&tmp);
    let result = write(&tmp).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("{}: cannot move the finished file into place", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    release_temporary(slot);
    result.with_context(|| format!("{}: not written", path.display()))
}

/// Writes bytes atomically.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |tmp| {
        let mut f = fs::File::create(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().with_context(|| format!("{}: cannot sync", tmp.display()))?;
        Ok(())
    })
}

/// Writes pretty JSON atomically, with a trailing newline.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    atomic_write(path, text.as_bytes())
}
