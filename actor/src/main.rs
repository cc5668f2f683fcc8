//! `actor`: the Flotilla actor binary (the program is [`flotilla_actor::app`]).

fn main() -> std::process::ExitCode {
    flotilla_actor::app::main()
}
