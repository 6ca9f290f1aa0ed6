//! Runs one produce or consume workload through one peer client and prints one JSON line.
//! See the crate README for the flags and what is measured.

use peer_bench::args::BenchArgs;

fn main() {
    let args = match BenchArgs::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match peer_bench::clients::run(&args) {
        Ok(outcome) => println!("{}", outcome.to_json_line()),
        Err(err) => {
            eprintln!(
                "peer-bench {} {} failed: {err}",
                args.client.name(),
                args.mode.name()
            );
            std::process::exit(1);
        }
    }
}
