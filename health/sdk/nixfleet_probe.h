/* nixfleet probe plugin ABI, version 1.
 *
 * A plugin is a shared object exporting one function, `nixfleet_probe_entry`, that returns a
 * pointer to a static `nixfleet_probe_v1` table. The agent never loads plugins into its own
 * process: `nixfleet-probe-host` loads the plugin for one check and reports the result, so a
 * plugin that crashes, hangs or leaks only ends the helper. See README.md beside this header.
 */
#ifndef NIXFLEET_PROBE_H
#define NIXFLEET_PROBE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NIXFLEET_PROBE_ABI_VERSION 1u
#define NIXFLEET_PROBE_ENTRY_SYMBOL "nixfleet_probe_entry"

typedef enum nixfleet_probe_status {
  NIXFLEET_PROBE_PASS = 0,
  NIXFLEET_PROBE_FAIL = 1
} nixfleet_probe_status;

/* Filled by run(). `message` (UTF-8, optional) is owned by the plugin until free_result(). */
typedef struct nixfleet_probe_result {
  int32_t status; /* a nixfleet_probe_status */
  char* message;
} nixfleet_probe_result;

typedef struct nixfleet_probe_v1 {
  /* NIXFLEET_PROBE_ABI_VERSION and sizeof(nixfleet_probe_v1) as the plugin was built. */
  uint32_t abi_version;
  uint32_t struct_size;
  /* A short name for messages, e.g. "disk_free". */
  const char* name;

  /* Parses the probe's "config" object (JSON text, `config_len` bytes, NUL-terminated).
   * Returns the plugin's state, or NULL with a message in `error` (at most `error_len` bytes). */
  void* (*init)(const char* config_json, size_t config_len, char* error, size_t error_len);

  /* One check. `deadline_ms` is the time the check may take; the host is killed after it.
   * Returns 0 when `result` was filled, non-zero otherwise (a failed probe). */
  int (*run)(void* state, uint64_t deadline_ms, nixfleet_probe_result* result);

  /* Releases what run() put into `result`. */
  void (*free_result)(void* state, nixfleet_probe_result* result);

  /* Releases the state made by init(). */
  void (*destroy)(void* state);
} nixfleet_probe_v1;

/* The one exported symbol. */
typedef const nixfleet_probe_v1* (*nixfleet_probe_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* NIXFLEET_PROBE_H */
