/* Test plugins that misbehave on purpose; MODE picks how (compiled once per mode). */
#include "nixfleet_probe.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static void* plugin_init(const char* config, size_t len, char* error, size_t error_len) {
  (void)config;
  (void)len;
#if MODE == MODE_INIT_FAILS
  snprintf(error, error_len, "missing config.threshold");
  return NULL;
#else
  (void)error;
  (void)error_len;
  return malloc(1);
#endif
}

static int plugin_run(void* state, uint64_t deadline_ms, nixfleet_probe_result* result) {
  (void)state;
  (void)deadline_ms;
#if MODE == MODE_SEGFAULT
  raise(SIGSEGV);
#elif MODE == MODE_HANG
  for (;;) pause();
#endif
  /* MODE_GARBAGE: a status that is neither pass nor fail, and bytes that are not UTF-8. */
  result->status = 42;
  result->message = strdup("\xff\xfe garbage");
  return 0;
}

static void plugin_free_result(void* state, nixfleet_probe_result* result) {
  (void)state;
  free(result->message);
}

static void plugin_destroy(void* state) { free(state); }

static const nixfleet_probe_v1 table = {
#if MODE == MODE_WRONG_ABI
    99u,
#else
    NIXFLEET_PROBE_ABI_VERSION,
#endif
    sizeof(nixfleet_probe_v1), "misbehaving", plugin_init, plugin_run, plugin_free_result, plugin_destroy,
};

EXPORT const nixfleet_probe_v1* nixfleet_probe_entry(void) { return &table; }
