# Loopback TCP sockets with known owners, for socket introspection (traffic stays inside the guest).
# Background jobs get /dev/null as stdin: feed nc from sleep so connections stay open.
ip link set lo up
sleep 100000 | nc -l -p 9090 >/dev/null &
sleep 100000 | nc -l -p 9091 >/dev/null &
sleep 1
sleep 100000 | nc 127.0.0.1 9090 >/dev/null &
sleep 1
echo "@@VMI-NETWORK-READY" > /dev/console
