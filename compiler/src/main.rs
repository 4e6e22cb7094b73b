//! The `qcc` binary.

// Networks allocate and free activation buffers of many megabytes per op; mimalloc keeps them
// instead of returning them to the OS, which saves most of the page-fault time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = qcc_compiler::cli::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}
