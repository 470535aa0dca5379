//! `flash-keygen`: writes a dev Ed25519 JWT key pair unless one exists.
//!
//! The stack script runs it on first start, so no key is ever committed.

use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use flash_core::auth::keys::KeyPair;

/// Generate the JWT signing key pair member-api signs with and every service verifies with.
#[derive(Parser)]
struct Args {
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long, env = "JWT_PRIVATE_KEY")]
    private: PathBuf,
    /// Where to write the public key (SPKI PEM).
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    public: PathBuf,
    /// Replace an existing pair (every issued token stops verifying).
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.private.exists() && args.public.exists() && !args.force {
        println!("JWT key pair already present at {}", args.private.display());
        return Ok(());
    }
    let pair = KeyPair::generate()?;
    for path in [&args.private, &args.public] {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let mut private = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.private)
        .with_context(|| format!("writing {}", args.private.display()))?;
    private.write_all(pair.private_pem.as_bytes())?;
    fs::write(&args.public, pair.public_pem)
        .with_context(|| format!("writing {}", args.public.display()))?;
    println!(
        "wrote JWT key pair: {} (private), {} (public)",
        args.private.display(),
        args.public.display()
    );
    Ok(())
}
