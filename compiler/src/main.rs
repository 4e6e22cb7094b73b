//! The `qcc` binary.

use std::io::{ErrorKind, Write};

// Networks allocate and free activation buffers of many megabytes per op; mimalloc keeps them
// instead of returning them to the OS, which saves most of the page-fault time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc to keep freed memory committed (no purging, arenas committed eagerly): with
/// its defaults a MobileNetV2 run spends a third of its time zeroing pages it just gave back
/// (kit, 64 images, one thread: 3.8 s against 2.2 s). The numbers are mimalloc v2's
/// `mi_option_purge_delay` and `mi_option_arena_eager_commit` (`libmimalloc-sys` does not name
/// them); the lock file pins that version.
fn keep_freed_memory() {
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: setting options is allowed at any time; unknown values are ignored by mimalloc.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 1);
    }
}

/// Standard output that stops writing, without an error, once its reader has gone (`qcc report
/// ... | head`): the command still finishes and writes its files.
struct Stdout {
    inner: std::io::Stdout,
    closed: bool,
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}

fn main() {
    keep_freed_memory();
    let mut out = Stdout {
        inner: std::io::stdout(),
        closed: false,
    };
    let code = qcc_compiler::cli::run(std::env::args_os(), &mut out, &mut std::io::stderr());
    let _ = out.flush();
    std::process::exit(code);
}
