/* Lab test program: a non-root victim for the credential-escalation attack. Drops to uid/gid 1000,
 * then every 200 ms writes "uid=U euid=E gid=G egid=G" to /run/vmi-user.<pid> (created while still
 * root, then handed to uid 1000), so an escalation done to it from the kernel is visible inside. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    char path[64], line[96];
    snprintf(path, sizeof path, "/run/vmi-user.%d", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || fchown(fd, 1000, 1000) != 0)
        return 1;
    if (setgroups(0, NULL) != 0 || setgid(1000) != 0 || setuid(1000) != 0)
        return 2;
    for (;;) {
        int n = snprintf(line, sizeof line, "uid=%d euid=%d gid=%d egid=%d\n",
            (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n)
            return 3;
        usleep(200 * 1000);
    }
}
