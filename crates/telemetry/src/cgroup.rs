//! The memory the process may use, for `heartrule_process_memory_limit_bytes`:
//! resident memory alone cannot tell an operator how close the process is to
//! being OOM-killed. That is the limit the kernel enforces on the process's
//! cgroup, or the machine's physical memory when the cgroup sets none (or a
//! larger one), so the gauge exists everywhere and one alert covers both.
//!
//! The effective limit is the smallest one on the path from the process's
//! cgroup up to the root of the hierarchy (a parent's limit caps its
//! children). cgroup v2 (`memory.max`, `max` when unlimited) wins when its
//! files exist; otherwise v1 (`memory/…/memory.limit_in_bytes`, a huge
//! page-rounded number when unlimited).

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The process's cgroup membership, one line per hierarchy.
pub(crate) const SELF_CGROUP: &str = "/proc/self/cgroup";

/// cgroup v1 reports "no limit" as `PAGE_COUNTER_MAX` pages (about 2^63
/// bytes, rounded down to the page size); nothing at or above 2^62 bytes is
/// a limit a real machine enforces.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// Where the kernel reports the machine's memory.
pub(crate) const MEMINFO: &str = "/proc/meminfo";

/// The memory the process may use, in bytes: the smaller of its effective
/// cgroup limit and the machine's physical memory; `None` only when neither
/// can be read (not Linux).
pub(crate) fn memory_limit_bytes() -> Option<u64> {
    let membership = std::fs::read_to_string(SELF_CGROUP).unwrap_or_default();
    let cgroup = memory_limit_under(Path::new(CGROUP_ROOT), &membership);
    let physical = std::fs::read_to_string(MEMINFO)
        .ok()
        .and_then(|text| mem_total_bytes(&text));
    match (cgroup, physical) {
        (Some(cgroup), Some(physical)) => Some(cgroup.min(physical)),
        (limit, None) | (None, limit) => limit,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes (the file counts kB).
pub(crate) fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let kilobytes: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => kilobytes.checked_mul(1024),
        _ => None,
    }
}

/// [`memory_limit_bytes`] for a cgroup filesystem mounted at `root` and the
/// `/proc/self/cgroup` text `membership` (tests use a temporary folder).
pub(crate) fn memory_limit_under(root: &Path, membership: &str) -> Option<u64> {
    let v2_path = membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or("/");
    let v2 = smallest_limit(root, v2_path, "memory.max", parse_v2);
    if v2.found_any {
        return v2.limit;
    }
    let v1_path = membership
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _hierarchy_id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            controllers
                .split(',')
                .any(|controller| controller == "memory")
                .then_some(path)
        })
        .unwrap_or("/");
    smallest_limit(
        &root.join("memory"),
        v1_path,
        "memory.limit_in_bytes",
        parse_v1,
    )
    .limit
}

struct Found {
    /// Whether any limit file of the hierarchy was readable.
    found_any: bool,
    /// The smallest limit read, `None` when every file said unlimited.
    limit: Option<u64>,
}

/// Reads `file` in the cgroup at `path` and in each of its ancestors. In a
/// container the process's path often names a cgroup that is not mounted
/// inside it (its own cgroup is the mount's root); missing levels are skipped.
fn smallest_limit(mount: &Path, path: &str, file: &str, parse: fn(&str) -> Option<u64>) -> Found {
    let mut found = Found {
        found_any: false,
        limit: None,
    };
    let mut level = PathBuf::from(path.trim().trim_start_matches('/'));
    loop {
        if let Ok(text) = std::fs::read_to_string(mount.join(&level).join(file)) {
            found.found_any = true;
            if let Some(limit) = parse(&text) {
                found.limit = Some(found.limit.map_or(limit, |smallest| smallest.min(limit)));
            }
        }
        if !level.pop() {
            break;
        }
    }
    found
}

fn parse_v2(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

fn parse_v1(text: &str) -> Option<u64> {
    text.trim()
        .parse()
        .ok()
        .filter(|limit| *limit < V1_UNLIMITED_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A throwaway cgroup tree under the system temp folder.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!(
                "heartrule-cgroup-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
            Self(root)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn v2_reads_memory_max_and_max_means_unlimited() {
        let tree = Tree::new("v2");
        tree.write("memory.max", "536870912\n");
        assert_eq!(memory_limit_under(&tree.0, "0::/\n"), Some(536_870_912));
        tree.write("memory.max", "max\n");
        assert_eq!(memory_limit_under(&tree.0, "0::/\n"), None);
    }

    #[test]
    fn v2_takes_the_smallest_limit_up_the_tree() {
        let tree = Tree::new("v2-nested");
        tree.write("system.slice/memory.max", "1073741824\n");
        tree.write("system.slice/heartrule.service/memory.max", "max\n");
        assert_eq!(
            memory_limit_under(&tree.0, "0::/system.slice/heartrule.service\n"),
            Some(1_073_741_824)
        );
        tree.write("system.slice/heartrule.service/memory.max", "268435456\n");
        assert_eq!(
            memory_limit_under(&tree.0, "0::/system.slice/heartrule.service\n"),
            Some(268_435_456)
        );
    }

    #[test]
    fn v1_reads_limit_in_bytes_and_its_huge_default_means_unlimited() {
        let membership = "4:memory:/docker/abc\n1:cpu:/\n0::/\n";
        let tree = Tree::new("v1");
        tree.write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(memory_limit_under(&tree.0, membership), None);
        tree.write("memory/docker/abc/memory.limit_in_bytes", "2147483648\n");
        assert_eq!(memory_limit_under(&tree.0, membership), Some(2_147_483_648));
    }

    #[test]
    fn physical_memory_comes_from_mem_total_in_kilobytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24_576_000 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 12 MB\n"), None);
    }

    #[test]
    fn this_machine_reports_a_limit_no_larger_than_its_memory() {
        let physical = mem_total_bytes(&std::fs::read_to_string(MEMINFO).unwrap()).unwrap();
        let limit = memory_limit_bytes().expect("Linux reports a limit");
        assert!(limit > 0 && limit <= physical, "{limit} > {physical}");
    }

    #[test]
    fn no_controller_means_no_limit() {
        let tree = Tree::new("none");
        assert_eq!(memory_limit_under(&tree.0, ""), None);
        assert_eq!(memory_limit_under(&tree.0, "0::/\n"), None);
    }
}
