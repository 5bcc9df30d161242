# Victims for the test kernel rootkit (/lib/vmi/vmi_rootkit.ko, see Guest/modules/vmi_rootkit).
# The module is NOT loaded here: tests load it and trigger each attack over the console, e.g.
#   sh insmod /lib/vmi/vmi_rootkit.ko    sh kill -63 <hide pid>    sh kill -62 0
#   sh kill -61 0                        sh kill -64 <user pid>
# Started: a non-root process (vmi-user, uid 1000) to escalate, a process named "hideme" to hide
# (it never exits: see the module's notes on hidden tasks), and an IPv4 loopback TCP listener
# (busybox httpd on 127.0.0.1:9190; busybox nc -l would listen on [::], i.e. in /proc/net/tcp6)
# whose line in /proc/net/tcp the prologue patch hides. Ends with one line naming their pids.
ip link set lo up
d=/opt/rootkit
mkdir -p "$d"
cp /lab/bin/vmi-sleeper "$d/hideme"
"$d/hideme" &
hide=$!
/lab/bin/vmi-user &
user=$!
httpd -f -p 127.0.0.1:9190 -h "$d" &
listener=$!
i=0
while [ $i -lt 50 ] && ! grep -q ':23E6 ' /proc/net/tcp; do sleep 0.1; i=$((i + 1)); done
while [ $i -lt 50 ] && [ ! -s "/run/vmi-user.$user" ]; do sleep 0.1; i=$((i + 1)); done
echo "@@VMI-ROOTKIT-READY hide=$hide user=$user listener=$listener port=9190 module=/lib/vmi/vmi_rootkit.ko" > /dev/console
