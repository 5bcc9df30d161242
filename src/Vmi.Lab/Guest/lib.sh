# Ground truth the guest reports about itself, for differential tests against introspection.
hexof() { xxd -p | tr -d '\n'; }

vmi_truth() {
  echo "V $(cat /proc/version)"
  echo "C $(cat /proc/cmdline)"
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ -r "$d/status" ] || continue
    ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$d/status" 2>/dev/null)
    uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "$d/status" 2>/dev/null)
    comm=$(hexof < "$d/comm" 2>/dev/null)
    cmdline=$(hexof < "$d/cmdline" 2>/dev/null)
    [ -n "$ppid" ] && echo "P $pid $ppid $uid $comm ${cmdline:--}"
  done
  while read -r line; do echo "M $line"; done < /proc/modules
  grep -E ' (_text|_stext|_etext|linux_banner|init_task|swapper_pg_dir|init_top_pgt|page_offset_base|vmemmap_base|vmalloc_base|phys_base|sys_call_table|idt_table|modules|__per_cpu_offset|kallsyms_names|kallsyms_num_syms)$' /proc/kallsyms | while read -r a t n; do echo "K $a $t $n"; done
  while read -r line; do echo "I $line"; done < /proc/iomem
}
