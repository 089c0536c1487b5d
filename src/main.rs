use std::process::ExitCode;

fn main() -> ExitCode {
    match wsstorm::cli::main() {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
