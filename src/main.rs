fn main() {
    // libgit2 waits for ever on a Git server that accepts a connection and
    // never answers; a daemon must give up and try again at its next interval
    // (and stay stoppable). SAFETY: these set C globals of libgit2; this is
    // the first thing the process does, before any thread exists.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
    }
    std::process::exit(regimen::cli::main());
}
