//! The Lua scripts, each its own file in `lua/` with a header naming its KEYS, ARGV and reply.
//! Redis has no includes: a script that places tickets gets `lua/units.lua` put in front of it
//! here, so waitlist placement is written once.

use std::sync::LazyLock;

/// A Lua script with its source and SHA1: `EVALSHA` first, the source for a Redis that does not
/// know it (yet, or since a restart). The door runs these over its own pipelined connection,
/// everything else through the `redis` crate.
pub struct Script {
    source: &'static str,
    script: redis::Script,
}

impl Script {
    fn new(source: &'static str) -> Self {
        Self {
            source,
            script: redis::Script::new(source),
        }
    }

    /// The script's text, for `EVAL`.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Its SHA1 in hex, for `EVALSHA`.
    pub fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// The script for the `redis` crate's connections.
    pub fn redis(&self) -> &redis::Script {
        &self.script
    }
}

/// Declares each script from its file in `lua/`, some behind the shared placement functions.
macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $($file:literal)+;)+) => {
        $($(#[$doc])* pub static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!($(include_str!(concat!("lua/", $file))),+)));)+

        /// Every script's source, for the tests that read them.
        #[cfg(test)]
        pub(crate) const SOURCES: &[(&str, &str)] = &[
            $((stringify!($name), concat!($(include_str!(concat!("lua/", $file))),+))),+
        ];
    };
}

scripts! {
    /// An entry (the door): `lua/enter.lua`.
    ENTER = "units.lua" "enter.lua";
    /// A failed publish taken back: `lua/undo.lua`.
    UNDO = "undo.lua";
    /// The drain's read of its fetched tickets: `lua/claim.lua`.
    CLAIM = "claim.lua";
    /// The pre-queue as the release draws it: `lua/close_prequeue.lua`.
    CLOSE_PREQUEUE = "close_prequeue.lua";
    /// The pre-queue release's placement: `lua/place.lua`.
    PLACE = "units.lua" "place.lua";
    /// Waiting tickets put back after a loss: `lua/restore_waiting.lua`.
    RESTORE_WAITING = "units.lua" "restore_waiting.lua";
    /// The waitlist promoter: `lua/promote.lua`.
    PROMOTE = "units.lua" "promote.lua";
    /// The waitlist's end: `lua/close_waitlist.lua`.
    CLOSE_WAITLIST = "close_waitlist.lua";
    /// A promoted ticket queued: `lua/confirm_promoted.lua`.
    CONFIRM_PROMOTED = "confirm_promoted.lua";
    /// An order paid or cancelled: `lua/settle.lua`.
    SETTLE = "settle.lua";
    /// An abandoned ticket: `lua/expire.lua`.
    EXPIRE = "expire.lua";
    /// The served counter: `lua/served.lua`.
    SERVED = "served.lua";
    /// The drain rate: `lua/measure_rate.lua`.
    MEASURE_RATE = "measure_rate.lua";
    /// The outflow bucket: `lua/outflow_take.lua`.
    OUTFLOW_TAKE = "outflow_take.lua";
    /// Unused outflow tokens: `lua/outflow_give_back.lua`.
    OUTFLOW_GIVE_BACK = "outflow_give_back.lua";
    /// Metadata brought to PostgreSQL's settings: `lua/converge_meta.lua`.
    CONVERGE_META = "converge_meta.lua";
    /// A gate found off, set if unmoved: `lua/correct_gate.lua`.
    CORRECT_GATE = "correct_gate.lua";
    /// Units into an armed gate: `lua/add_units.lua`.
    ADD_UNITS = "add_units.lua";
    /// Units out of the gate: `lua/take_units.lua`.
    TAKE_UNITS = "take_units.lua";
    /// The product cache: `lua/store_product.lua`.
    STORE_PRODUCT = "store_product.lua";
    /// A lock renewed by its owner: `lua/lock_renew.lua`.
    LOCK_RENEW = "lock_renew.lua";
    /// A lock released by its owner: `lua/lock_release.lua`.
    LOCK_RELEASE = "lock_release.lua";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TicketStatus;

    /// The words in quotes of a script's code (its comments left out).
    fn quoted(source: &str) -> impl Iterator<Item = (&str, &str)> {
        source
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .flat_map(|line| {
                line.split('\'')
                    .skip(1)
                    .step_by(2)
                    .map(move |word| (line, word))
            })
    }

    /// Every lower-case word a script writes or compares is a ticket status the enum knows, or
    /// one of the hash fields and modes the scripts share with Rust.
    #[test]
    fn every_status_a_script_names_is_a_ticket_status() {
        /// Hash fields, reply words and modes: the other words the scripts quote.
        const NOT_STATUSES: [&str; 28] = [
            "status",
            "claimed",
            "drawing",
            "member",
            "seq",
            "wseq",
            "seen",
            "waitlist",
            "released",
            "drawn",
            "backlog",
            "tokens",
            "at",
            "start",
            "count",
            "starts_at",
            "ends_at",
            "prequeue_at",
            "pow",
            "abandon",
            "outflow",
            "existing",
            "early",
            "ended",
            "unknown",
            "more",
            "done",
            "stale",
        ];
        let mut statuses = std::collections::HashSet::new();
        for (file, source) in SOURCES {
            for (line, word) in quoted(source) {
                if !word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    continue;
                }
                match TicketStatus::parse(word) {
                    Some(status) => {
                        statuses.insert(status);
                    }
                    None => assert!(
                        NOT_STATUSES.contains(&word),
                        "{file}: '{word}' in `{line}` is no ticket status"
                    ),
                }
            }
        }
        assert!(statuses.len() >= 9, "the scripts name {statuses:?}");
    }

    /// Redis Cluster runs a script only on the keys it was handed: every command's key is one
    /// of KEYS, or a parameter of `units.lua`'s functions or a local of a loop over KEYS, which
    /// get theirs from KEYS.
    #[test]
    fn every_key_a_script_touches_comes_from_keys() {
        const PASSED_ON: [&str; 9] = [
            "gate",
            "seq",
            "promoting",
            "ticket",
            "waitlist",
            "wseq",
            "key",
            "held",
            "index",
        ];
        let mut calls = 0;
        for (file, source) in SOURCES {
            for call in source.split("redis.call(").skip(1) {
                let mut args = call.split([',', ')']).map(str::trim);
                let command = args.next().unwrap_or_default();
                if command == "'TIME'" {
                    continue;
                }
                let key = args.next().unwrap_or_default();
                assert!(
                    key.starts_with("KEYS[") || PASSED_ON.contains(&key),
                    "{file}: {command} on `{key}`"
                );
                calls += 1;
            }
        }
        assert!(calls > 50, "{calls} calls");
    }
}
