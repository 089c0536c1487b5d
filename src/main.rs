use std::process::ExitCode;

fn main() -> ExitCode {
    match wsstorm::cli::main() {
        Ok(code) => code,
        Err(f) => {
            // Not eprintln!: it panics when stderr is a closed pipe.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
