//! `tandem-loadgen`: the load generator on its own, until it is wired in as
//! `tandem loadgen`. Flags are those of [`tandem_loadgen::run_cli`].

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = tandem_loadgen::run_cli(&args) {
        eprintln!("tandem-loadgen: {e:#}");
        if e.downcast_ref::<tandem_loadgen::FlagError>().is_some() {
            eprint!("{}", tandem_loadgen::USAGE);
            std::process::exit(2);
        }
        std::process::exit(1);
    }
}
