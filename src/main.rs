//! The `slimgate` binary: parse flags, run the gateway until a signal.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use slimgate::{app, config};

fn main() -> ExitCode {
    let action = match config::parse(std::env::args_os().skip(1), |k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("slimgate: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match action {
        config::Action::Help => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        config::Action::Version => {
            println!("slimgate {}", app::VERSION);
            return ExitCode::SUCCESS;
        }
        config::Action::Run(c) => *c,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slimgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            slimgate::log::error("cannot start").str("error", &e.0).emit();
            ExitCode::from(1)
        }
    };
    drop(runtime);
    // Log lines are written by a thread of their own: let the last ones
    // (the startup error, the shutdown lines) reach stderr before exiting.
    slimgate::log::flush();
    code
}
