//! Resolving the listen address and the worker layout (how many workers, which CPU
//! each is pinned to) from the configuration. Owns no sockets beyond start-up.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::{Config, RuntimeConfig, Workers};

/// moq-relay's QUIC listen address when `[server] bind` is unset.
pub const DEFAULT_BIND: &str = "[::]:443";

/// Resolves `[server] bind` (a socket address or `host:port`; names resolve to their
/// first address, as in moq-relay).
pub fn resolve_bind(config: &Config) -> std::io::Result<SocketAddr> {
    let bind = config.server.bind.as_deref().unwrap_or(DEFAULT_BIND);
    bind.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{bind}` resolved to no address"),
        )
    })
}

/// The CPU each worker runs on (`None` when not pinned), one entry per worker.
pub fn worker_cpus(runtime: &RuntimeConfig, allowed_cpus: &[usize]) -> Vec<Option<usize>> {
    let candidates: &[usize] = if runtime.cpus.is_empty() {
        allowed_cpus
    } else {
        &runtime.cpus
    };
    let count = match runtime.workers {
        Workers::Count(count) => count,
        Workers::Auto => candidates.len().max(1),
    };
    (0..count)
        .map(|worker| {
            runtime
                .pin
                .then(|| candidates.get(worker).copied())
                .flatten()
        })
        .collect()
}

/// The allowed CPUs that no worker is pinned to.
pub fn housekeeping_cpus(runtime: &RuntimeConfig, allowed_cpus: &[usize]) -> Vec<usize> {
    let workers = worker_cpus(runtime, allowed_cpus);
    allowed_cpus
        .iter()
        .copied()
        .filter(|cpu| !workers.contains(&Some(*cpu)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_workers_use_every_allowed_cpu_in_order() {
        let runtime = RuntimeConfig::default();
        assert_eq!(
            worker_cpus(&runtime, &[2, 5, 7]),
            vec![Some(2), Some(5), Some(7)]
        );
    }

    #[test]
    fn explicit_cpu_list_orders_workers_and_unpinned_workers_have_no_cpu() {
        let runtime = RuntimeConfig {
            workers: Workers::Count(2),
            cpus: vec![7, 3],
            ..RuntimeConfig::default()
        };
        assert_eq!(
            worker_cpus(&runtime, &[0, 1, 2, 3, 7]),
            vec![Some(7), Some(3)]
        );
        let unpinned = RuntimeConfig {
            pin: false,
            ..runtime
        };
        assert_eq!(worker_cpus(&unpinned, &[0, 1, 2, 3, 7]), vec![None, None]);
    }

    #[test]
    fn the_control_thread_gets_the_cpus_no_worker_is_pinned_to() {
        let one_worker = RuntimeConfig {
            workers: Workers::Count(1),
            ..RuntimeConfig::default()
        };
        assert_eq!(housekeeping_cpus(&one_worker, &[0, 1, 2]), vec![1, 2]);
        let everywhere = RuntimeConfig::default();
        assert_eq!(housekeeping_cpus(&everywhere, &[0, 1]), Vec::<usize>::new());
        let unpinned = RuntimeConfig {
            pin: false,
            ..one_worker
        };
        assert_eq!(housekeeping_cpus(&unpinned, &[0, 1]), vec![0, 1]);
    }
}
