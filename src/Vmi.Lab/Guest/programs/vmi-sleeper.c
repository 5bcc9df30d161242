/* Lab test program: does nothing but wait, under whatever name and arguments it is given,
 * so scenarios can populate the process list with awkward names (busybox applets can't be renamed). */
#include <unistd.h>

int main(void)
{
    for (;;)
        pause();
}
