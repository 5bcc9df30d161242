/* Lab test program: maps a page, fills it with a recognisable pattern, prints where it is,
 * then spins in user mode so a paused vCPU is most likely in this process's address space. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Many small mappings: a region whose pages alternate read-only / read-write cannot be merged,
 * so it becomes one VMA per page and the process's maple tree grows internal nodes. */
#define MANY_PAGES 2048

int main(void)
{
    unsigned char *many = mmap(NULL, MANY_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (many == MAP_FAILED)
        return 1;
    for (int i = 0; i < MANY_PAGES; i += 2)
        mprotect(many + (long)i * 4096, 4096, PROT_READ);

    unsigned char *page = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 1;
    for (int i = 0; i < 2 * 4096; i++)
        page[i] = (unsigned char)(i * 7 + 3);
    /* The marker straddles the page boundary so virtual reads must cross it. */
    snprintf((char *)page + 4096 - 16, 48, "VMI-MARKER-%d-CROSSES-PAGE", (int)getpid());
    FILE *f = fopen("/dev/console", "w");
    if (f) {
        fprintf(f, "@@VMI-MARKER pid=%d addr=0x%lx\n", (int)getpid(), (unsigned long)(page + 4096 - 16));
        fclose(f);
    }
    volatile unsigned long spin = 0;
    for (;;)
        spin++;
}
