# Loopback TCP/UDP sockets with known owners, for socket introspection (traffic stays inside the guest).
ip link set lo up
nc -l -p 8080 >/dev/null &
nc -l -p 8081 >/dev/null &
nc -u -l -p 5353 >/dev/null &
sleep 1
(sleep 100000 | nc 127.0.0.1 8080) &
sleep 1
echo "@@VMI-NETWORK-READY" > /dev/console
