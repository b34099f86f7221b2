//! The `easel-auth` binary: serve (the default), `bootstrap` or `rotate-keys`; see
//! [`easel_auth::cli`].

fn main() -> std::process::ExitCode {
    easel_auth::cli::main()
}
