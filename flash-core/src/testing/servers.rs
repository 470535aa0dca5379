//! Servers a test or the chaos rig starts for itself (its own `redis-server`s or
//! `nats-server`s on free ports, to kill without touching the shared ones), and what finding
//! them takes.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
};

/// A loopback port free now (the listener that found it is closed again).
///
/// # Errors
/// When the OS has no free port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `name` on the PATH, or in the sbin folders a user's PATH may lack (Debian puts
/// `nats-server` in `/usr/sbin`); the bare name when it is nowhere, so starting it says so.
pub fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A server process started on `port`, SIGKILLed and reaped when dropped: a test that panics
/// leaves no server behind.
pub struct OwnServer {
    /// The port it serves clients on.
    pub port: u16,
    child: Child,
}

impl OwnServer {
    /// Starts `command`, which serves on `port`.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(command: &mut Command, port: u16) -> std::io::Result<Self> {
        Ok(Self {
            port,
            child: command.spawn()?,
        })
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
