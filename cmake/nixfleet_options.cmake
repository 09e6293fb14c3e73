# Build options and the INTERFACE targets that carry them: nixfleet::options, nixfleet::sanitizers.
option(NIXFLEET_WERROR "Treat compiler warnings as errors" OFF)
option(NIXFLEET_BUILD_TESTS "Build the unit tests" ON)
option(NIXFLEET_FUZZ "Build libFuzzer targets (needs clang)" OFF)
option(NIXFLEET_BUILD_BENCH "Build the benchmark programs (integration/bench)" OFF)
set(NIXFLEET_SANITIZE "" CACHE STRING "Sanitizers to enable, e.g. address;undefined")

set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()

# Off by default: measured on the 2-core CI machine, a cold dev build took 447 s with it and 395 s
# without (each target builds its own 20-second debug-info PCH; the units save ~3 s each).
option(NIXFLEET_PCH "Precompile the Standard Library and Boost headers most units include" OFF)

find_program(NIXFLEET_CCACHE ccache)
if(NIXFLEET_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # ccache caches units built with a precompiled header only when told to ignore its timestamps.
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime ${NIXFLEET_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${NIXFLEET_CCACHE})
endif()

add_library(nixfleet_options INTERFACE)
add_library(nixfleet::options ALIAS nixfleet_options)
target_compile_features(nixfleet_options INTERFACE cxx_std_20)
target_compile_options(nixfleet_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough -Wno-missing-field-initializers
  # GCC 12 misreads Asio's coroutine frame allocator as a mismatched new/delete.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-mismatched-new-delete>
  # GCC 12 at -O3 reports impossible overlaps inside std::string (GCC bug 105329).
  $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>
  $<$<BOOL:${NIXFLEET_WERROR}>:-Werror>)
if(NIXFLEET_PCH)
  target_precompile_headers(nixfleet_options INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:${CMAKE_CURRENT_LIST_DIR}/precompiled.hpp>)
endif()
# A target of one unit gains nothing from a precompiled header (it would be built for that unit
# alone), and one that does not link nixfleet::boost must not see Asio's separate-compilation mode.
function(nixfleet_no_pch)
  set_target_properties(${ARGN} PROPERTIES DISABLE_PRECOMPILE_HEADERS ON)
endfunction()

add_library(nixfleet_sanitizers INTERFACE)
add_library(nixfleet::sanitizers ALIAS nixfleet_sanitizers)
if(NIXFLEET_SANITIZE)
  list(JOIN NIXFLEET_SANITIZE "," _nixfleet_san)
  # Sanitizers apply to the whole build (including the compiled Boost units) so that
  # container overflow annotations and ODR stay consistent.
  add_compile_options(-fsanitize=${_nixfleet_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_nixfleet_san})
  if("thread" IN_LIST NIXFLEET_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Asio's io_uring ops use atomic_thread_fence, which GCC warns TSan does not model.
    add_compile_options(-Wno-tsan)
  endif()
endif()
if(NIXFLEET_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "NIXFLEET_FUZZ needs clang (use the 'fuzz' preset)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
  if("undefined" IN_LIST NIXFLEET_SANITIZE AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 15)
    # clang 14's -fsanitize=function cannot assemble coroutine frames ("Cannot represent a
    # difference across sections"); the other UBSan checks stay on.
    add_compile_options(-fno-sanitize=function)
  endif()
endif()
