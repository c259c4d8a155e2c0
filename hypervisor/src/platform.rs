//! What the hypervisor core needs from the machine besides the vCPU backend: time, CPUID,
//! the serial console, the preemption timer and idling. Bare metal implements it with the TSC,
//! the local APIC and COM1; host tests with a scripted fake.

/// Machine services used by the core.
pub trait Platform {
    /// Nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// A cheap cycle counter (the TSC) for accounting; converted with [`Platform::tsc_khz`].
    fn cycles(&self) -> u64;
    /// TSC frequency in kHz (0 if unknown).
    fn tsc_khz(&self) -> u64;
    /// Executes CPUID on the host.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Queues the concatenation of `parts` for the serial console, whole or not at all
    /// (false: no room now). Never waits for the line.
    fn console_queue(&mut self, parts: &[&[u8]]) -> bool;
    /// Moves up to `max_bytes` queued bytes to the serial line, as many as it takes without
    /// waiting; returns (bytes sent, bytes still queued).
    fn console_drain(&mut self, max_bytes: usize) -> (usize, usize);
    /// A byte typed on the serial console, if any.
    fn console_poll(&mut self) -> Option<u8>;
    /// Arms the preemption timer to fire after `ns` of guest execution.
    fn arm_timer(&mut self, ns: u64);
    /// Lets pending host interrupts be delivered and acknowledged.
    fn ack_interrupts(&mut self);
    /// Sleeps until an interrupt arrives or `until_ns` passes.
    fn idle(&mut self, until_ns: u64);
    /// Free kernel-heap bytes (creation of domains is refused when it runs low).
    fn heap_free_bytes(&self) -> usize;
    /// Unpredictable words to key the guests' seed generator with (the hardware random
    /// number generator where there is one, mixed with the cycle counter).
    fn entropy_seed(&self) -> [u64; 4] {
        let t = self.cycles();
        [t, t.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15, self.now_ns(), 0]
    }
}
