# A user process with a known pattern in its heap that keeps the CPU busy in user mode.
exec /lab/bin/vmi-marker
