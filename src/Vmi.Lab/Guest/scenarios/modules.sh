# Loads the lab's small kernel modules so module introspection has something to compare with /proc/modules.
for m in dummy crc7 isofs; do modprobe "$m"; done
