//! The `qcc` binary.

use std::io::{ErrorKind, Write};

// Networks allocate and free activation buffers of many megabytes per op; mimalloc keeps them
// instead of returning them to the OS, which saves most of the page-fault time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let mut out = Stdout {
        inner: std::io::stdout(),
        closed: false,
    };
    let code = qcc_compiler::cli::run(std::env::args_os(), &mut out, &mut std::io::stderr());
    let _ = out.flush();
    std::process::exit(code);
}
