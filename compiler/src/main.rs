//! The `qcc` binary.

use std::io::{ErrorKind, Write};

// The system allocator. With the engine's per-thread scratch pools and bias correction's chunked
// float runs, mimalloc (used until 2026-12-04, purging off) held 30-45% more memory for no speed
// (kit MobileNetV2, paired runs: `quantize,bias-correct` 448 against 305 MiB peak at 0.92-1.07x
// the time; `qcc run` of 64 images 160 against 110 MiB int8 and 322 against 229 MiB float at
// 0.97-1.03x); only the reference engine's one-thread int8 run was ~15% faster with it.

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

/// Keeps freed memory in the process (glibc): blocks up to 512 MiB come from the heap rather than
/// fresh mappings, and the heap is not trimmed until 512 MiB are free at its top. Every float run
/// frees and allocates activations of tens of MiB; with glibc's defaults each came back as fresh
/// pages the kernel had to clear (an eighth of a `bias-correct` command's time).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocation policy; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
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
