#ifndef TROUPE_SYSTEM_H
#define TROUPE_SYSTEM_H

#include <spawn.h>

/// Marks this process not dumpable (Linux): its /proc files (environ, mem, fd…) become readable by
/// root only, so a program a tool starts as the same user cannot read Troupe's environment (the
/// API key). Returns 0 on success, -1 where it is not supported or failed.
int troupe_disable_dumping(void);

/// Adds to `actions` the closing of every descriptor from `lowest` up, so that a spawned helper
/// inherits none of this process's descriptors whatever their close-on-exec flag (glibc 2.34+).
/// Returns 0 on success, -1 where it is not supported.
int troupe_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Sets the extended attribute `name` of `path` (not following a symbolic link) to "1".
/// Returns 0 on success, -1 where it is not supported or failed.
int troupe_mark(const char *path, const char *name);

/// Whether `path` (not following a symbolic link) has the extended attribute `name`: 1 or 0.
int troupe_is_marked(const char *path, const char *name);

#endif
