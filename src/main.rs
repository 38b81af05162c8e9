fn main() {
    std::process::exit(regimen::cli::main());
}
