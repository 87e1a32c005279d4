//! Which CPUs this process may run on, and pinning a thread to one of them.
//! Reads the affinity mask with `sched_getaffinity`, because `core_affinity` lists only
//! the CPUs the calling thread already runs on (DESIGN.md, I/O layer facts).

/// CPUs in this process's affinity mask, ascending. Falls back to CPU 0 alone if the
/// kernel refuses to say, which makes any larger worker count fail validation loudly.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask that the kernel fills; size is passed exactly.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; `cpu` is bounds-checked against CPU_SETSIZE by the caller's
    // validation (it comes from `allowed_cpus`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
