//! Core profiles (the seeds' flavors, `flavors/*.toml`) and disk profiles
//! (`disks/*.toml`). Both are embedded in the binaries, so `ringmqd --profile kafka.2u4g`
//! works anywhere; a path to a `.toml` file of the same shape works too.
//!
//! A profile's `[broker]` table holds `server.properties` keys that `ringmqd` applies
//! before its config file and flags (so those still override a profile).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The seeds' published row for a flavor (per broker, 1 KB messages, read:write 1:1,
/// 3 replicas).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Published {
    pub brokers: String,
    pub max_tps_per_broker: u64,
    pub max_partitions_per_broker: u32,
    pub consumer_groups_per_broker: u32,
    pub max_connections_per_broker: u32,
    pub traffic_per_broker_mbps: u32,
}

/// A core profile: one of the seeds' flavors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CoreProfile {
    pub name: String,
    pub vcpus: usize,
    pub memory_gib: u64,
    pub published: Published,
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
}

impl CoreProfile {
    /// Shards on a host with `host_cores` cores: one per vCPU of the flavor, never more
    /// than the host has (thread-per-core does not oversubscribe).
    pub fn shards_on(&self, host_cores: usize) -> usize {
        self.vcpus.min(host_cores).max(1)
    }
}

/// A disk class's published figures (what a bandwidth cap emulates).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DiskClass {
    pub latency_ms: f64,
    /// 0: no published limit.
    pub bandwidth_mbps: u32,
}

/// A disk profile: how the engine writes, syncs and reads ahead on one class of disk.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DiskProfile {
    pub name: String,
    pub description: String,
    pub class: DiskClass,
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
}

impl DiskProfile {
    /// The profile as TOML (what `ringmq tune` writes).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }
}

const FLAVORS: [(&str, &str); 5] = [
    ("kafka.2u4g", include_str!("../flavors/kafka.2u4g.toml")),
    ("kafka.4u8g", include_str!("../flavors/kafka.4u8g.toml")),
    ("kafka.8u16g", include_str!("../flavors/kafka.8u16g.toml")),
    ("kafka.12u24g", include_str!("../flavors/kafka.12u24g.toml")),
    ("kafka.16u32g", include_str!("../flavors/kafka.16u32g.toml")),
];

const DISKS: [(&str, &str); 4] = [
    ("evs-high-io", include_str!("../disks/evs-high-io.toml")),
    (
        "evs-ultra-high-io",
        include_str!("../disks/evs-ultra-high-io.toml"),
    ),
    ("local-nvme", include_str!("../disks/local-nvme.toml")),
    ("page-cache", include_str!("../disks/page-cache.toml")),
];

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| format!("{what}: {e}"))
}

fn is_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".toml")
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read profile {path}: {e}"))
}

/// The five embedded flavors, smallest first.
pub fn core_profiles() -> Result<Vec<CoreProfile>, String> {
    FLAVORS.iter().map(|(n, t)| parse(n, t)).collect()
}

/// The embedded disk profiles.
pub fn disk_profiles() -> Result<Vec<DiskProfile>, String> {
    DISKS.iter().map(|(n, t)| parse(n, t)).collect()
}

/// A core profile by name (`kafka.2u4g` or `kafka.2u4g.cluster`) or by path.
pub fn core_profile(name: &str) -> Result<CoreProfile, String> {
    if is_path(name) {
        return parse(name, &read(name)?);
    }
    let short = name.strip_suffix(".cluster").unwrap_or(name);
    match FLAVORS.iter().find(|(n, _)| *n == short) {
        Some((n, t)) => parse(n, t),
        None => Err(format!(
            "unknown core profile {name:?}; known: {}",
            FLAVORS.map(|(n, _)| n).join(", ")
        )),
    }
}

/// A disk profile by name or by path.
pub fn disk_profile(name: &str) -> Result<DiskProfile, String> {
    if is_path(name) {
        return parse(name, &read(name)?);
    }
    match DISKS.iter().find(|(n, _)| *n == name) {
        Some((n, t)) => parse(n, t),
        None => Err(format!(
            "unknown disk profile {name:?}; known: {}",
            DISKS.map(|(n, _)| n).join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds' Table 1-1, as SPEC.md copies it.
    const TABLE: [(&str, u64, u32, u32, u32, u32); 5] = [
        ("kafka.2u4g", 30_000, 250, 20, 2000, 100),
        ("kafka.4u8g", 100_000, 500, 100, 4000, 200),
        ("kafka.8u16g", 150_000, 1000, 150, 4000, 250),
        ("kafka.12u24g", 200_000, 1500, 200, 4000, 375),
        ("kafka.16u32g", 250_000, 2000, 200, 4000, 500),
    ];

    #[test]
    fn flavors_match_the_published_table() {
        let profiles = core_profiles().unwrap();
        assert_eq!(profiles.len(), TABLE.len());
        for (p, (name, tps, parts, groups, conns, mbps)) in profiles.iter().zip(TABLE) {
            assert_eq!(p.name, name);
            let row = &p.published;
            assert_eq!(
                (
                    row.max_tps_per_broker,
                    row.max_partitions_per_broker,
                    row.consumer_groups_per_broker,
                    row.max_connections_per_broker,
                    row.traffic_per_broker_mbps
                ),
                (tps, parts, groups, conns, mbps),
                "{name}"
            );
            assert_eq!(p.broker["max.broker.partitions"], parts.to_string());
            assert_eq!(p.broker["max.connections"], conns.to_string());
            assert_eq!(
                p.broker["queued.max.request.bytes"],
                (p.memory_gib << 30 >> 3).to_string()
            );
        }
    }

    #[test]
    fn lookups_by_name_suffix_and_path() {
        assert_eq!(
            core_profile("kafka.8u16g.cluster").unwrap().name,
            "kafka.8u16g"
        );
        let err = core_profile("kafka.3u6g").unwrap_err();
        assert!(err.contains("kafka.2u4g"), "{err}");
        assert!(disk_profile("floppy").unwrap_err().contains("local-nvme"));
        let dir = std::env::temp_dir().join(format!("ringmq-tuning-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mine.toml");
        let mut p = disk_profile("evs-high-io").unwrap();
        p.name = "mine".into();
        std::fs::write(&path, p.to_toml().unwrap()).unwrap();
        assert_eq!(disk_profile(path.to_str().unwrap()).unwrap(), p);
        assert!(
            disk_profile("/nonexistent/x.toml")
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shards_never_exceed_host_cores() {
        let p = core_profile("kafka.16u32g").unwrap();
        assert_eq!(p.shards_on(2), 2);
        assert_eq!(p.shards_on(64), 16);
        assert_eq!(core_profile("kafka.2u4g").unwrap().shards_on(1), 1);
    }

    #[test]
    fn every_disk_profile_parses() {
        let d = disk_profiles().unwrap();
        assert_eq!(d.len(), DISKS.len());
        assert_eq!(d[0].class.bandwidth_mbps, 150);
        assert_eq!(d[1].class.bandwidth_mbps, 350);
    }
}
