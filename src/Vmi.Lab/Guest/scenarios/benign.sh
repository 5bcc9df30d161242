# Benign background workload: long-lived, idle processes with ordinary names (stable pids, so the
# process list can be compared with introspection at any time).
(while true; do sleep 100000; done) &
sleep 100000 &
