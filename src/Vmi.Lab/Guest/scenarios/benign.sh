# Benign background workload: a few long-lived, mostly idle processes with ordinary names.
(while true; do sleep 30; done) &
sleep 100000 &
