/* Example nixfleet probe plugin: passes while the filesystem holding `path` has at least
 * `min_free_mb` MiB and `min_free_percent` % free (config: {"path": "/", "min_free_mb": 512,
 * "min_free_percent": 5}). Build: cc -shared -fPIC -fvisibility=hidden -I.. disk_free.c */
#include "nixfleet_probe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define EXPORT __attribute__((visibility("default")))

struct disk_free_state {
  char path[4096];
  double min_free_mb;
  double min_free_percent;
};

/* The value text after `"key":` at the top level of a flat JSON object, or NULL. A plugin may use
 * any JSON library; this example stays dependency-free and only reads flat objects. */
static const char* find_value(const char* json, const char* key) {
  char quoted[128];
  snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char* at = strstr(json, quoted);
  if (!at) return NULL;
  at += strlen(quoted);
  while (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r') ++at;
  if (*at != ':') return NULL;
  ++at;
  while (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r') ++at;
  return at;
}

static int read_number(const char* json, const char* key, double* out) {
  const char* v = find_value(json, key);
  if (!v) return 0;
  char* end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (end == v || errno != 0 || d < 0) return -1;
  *out = d;
  return 1;
}

static void* disk_free_init(const char* config, size_t len, char* error, size_t error_len) {
  (void)len;
  struct disk_free_state* s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(error, error_len, "out of memory");
    return NULL;
  }
  const char* p = find_value(config, "path");
  if (!p || *p != '"') {
    snprintf(error, error_len, "config.path (a string) is required");
    free(s);
    return NULL;
  }
  ++p;
  size_t n = 0;
  while (p[n] && p[n] != '"' && p[n] != '\\' && n + 1 < sizeof s->path) ++n;
  if (p[n] != '"' || n == 0) {
    snprintf(error, error_len, "config.path must be a plain absolute path");
    free(s);
    return NULL;
  }
  memcpy(s->path, p, n);
  if (read_number(config, "min_free_mb", &s->min_free_mb) < 0 ||
      read_number(config, "min_free_percent", &s->min_free_percent) < 0 || s->min_free_percent > 100) {
    snprintf(error, error_len, "config.min_free_mb and config.min_free_percent must be non-negative numbers");
    free(s);
    return NULL;
  }
  return s;
}

static int disk_free_run(void* state, uint64_t deadline_ms, nixfleet_probe_result* result) {
  (void)deadline_ms;
  struct disk_free_state* s = state;
  struct statvfs st;
  char* msg = malloc(512);
  if (!msg) return 1;
  if (statvfs(s->path, &st) != 0) {
    snprintf(msg, 512, "statvfs %s: %s", s->path, strerror(errno));
    result->status = NIXFLEET_PROBE_FAIL;
    result->message = msg;
    return 0;
  }
  const double free_mb = (double)st.f_bavail * (double)st.f_frsize / (1024.0 * 1024.0);
  const double total_mb = (double)st.f_blocks * (double)st.f_frsize / (1024.0 * 1024.0);
  const double percent = total_mb > 0 ? 100.0 * free_mb / total_mb : 0;
  const int ok = free_mb >= s->min_free_mb && percent >= s->min_free_percent;
  snprintf(msg, 512, "%s: %.0f MiB free (%.1f%%), need %.0f MiB and %.1f%%", s->path, free_mb, percent,
           s->min_free_mb, s->min_free_percent);
  result->status = ok ? NIXFLEET_PROBE_PASS : NIXFLEET_PROBE_FAIL;
  result->message = msg;
  return 0;
}

static void disk_free_free_result(void* state, nixfleet_probe_result* result) {
  (void)state;
  free(result->message);
  result->message = NULL;
}

static void disk_free_destroy(void* state) { free(state); }

static const nixfleet_probe_v1 descriptor = {
    NIXFLEET_PROBE_ABI_VERSION, sizeof(nixfleet_probe_v1), "disk_free", disk_free_init, disk_free_run,
    disk_free_free_result,      disk_free_destroy,
};

EXPORT const nixfleet_probe_v1* nixfleet_probe_entry(void) { return &descriptor; }
