#define _GNU_SOURCE
#include "troupe_system.h"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

// C, because Swift cannot call variadic functions (prctl) nor see declarations that need
// _GNU_SOURCE (posix_spawn_file_actions_addclosefrom_np).

int troupe_disable_dumping(void) {
#if defined(__linux__)
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#else
    return -1;
#endif
}

int troupe_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
#else
    (void)actions;
    (void)lowest;
    return -1;
#endif
}

#if defined(__linux__)
#include <sys/xattr.h>

int troupe_mark(const char *path, const char *name) {
    return lsetxattr(path, name, "1", 1, 0);
}

int troupe_is_marked(const char *path, const char *name) {
    return lgetxattr(path, name, NULL, 0) >= 0 ? 1 : 0;
}
#else
int troupe_mark(const char *path, const char *name) {
    (void)path;
    (void)name;
    return -1;
}

int troupe_is_marked(const char *path, const char *name) {
    (void)path;
    (void)name;
    return 0;
}
#endif
