//! CPU time, to tell how much of the host the export itself used (the GPU
//! engine should leave the cores to the server producing the data).

/// CPU seconds (user + system) used by the calling thread so far.
pub(crate) fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: out-pointer to a valid timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU seconds (user + system) used by the whole process so far.
pub(crate) fn process_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: out-pointer to a valid rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work() {
        // Spin until this thread has used 30 ms of CPU (a wall-clock budget
        // would flake on a loaded machine, where the thread gets less CPU
        // than wall time); the process's counter must advance as far.
        let (t0, p0) = (thread_cpu_seconds(), process_cpu_seconds());
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while thread_cpu_seconds() - t0 < 0.03 && start.elapsed().as_secs() < 30 {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let thread = thread_cpu_seconds() - t0;
        assert!(
            thread >= 0.03,
            "thread CPU advanced {thread} s in 30 s of spinning"
        );
        assert!(process_cpu_seconds() - p0 >= thread - 0.005);
    }
}
