# A few hundred processes with awkward names, for process-list differential tests:
# spaces, exactly 15 characters, longer than comm holds, non-ASCII names and arguments.
d=/tmp/crowd
mkdir -p "$d"
for n in "name with spaces" "exactly15chars_" "a_much_longer_name_than_comm_holds" "ünïcødé-prøc"; do
  cp /lab/bin/vmi-sleeper "$d/$n"
  "$d/$n" "first arg" "ärgümënt ✓" "" "last" &
done
i=0
while [ $i -lt 250 ]; do
  /lab/bin/vmi-sleeper "worker $i" "ü-$i" &
  i=$((i + 1))
done
echo "@@VMI-CROWD-READY $i" > /dev/console
