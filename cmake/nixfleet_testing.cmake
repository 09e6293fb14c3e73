# nixfleet_add_test(NAME SOURCES src... [LIBS lib...] [LABELS label...] [PROCESS]): one Boost.Test
# binary, one ctest. Labelled `unit` (in-process, on test time: no real sleeps) or, with PROCESS,
# `process` (runs our binaries, sshd or nginx as real processes and waits for them in real time).
# Seconds any one test binary may run (the slowest takes well under a minute, sanitizers included).
set(NIXFLEET_TEST_TIMEOUT 300 CACHE STRING "ctest TIMEOUT of every test, in seconds")

function(nixfleet_add_test name)
  cmake_parse_arguments(ARG "PROCESS" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE nixfleet::options nixfleet::test_main ${ARG_LIBS})
  list(LENGTH ARG_SOURCES units)
  if(units EQUAL 1)
    nixfleet_no_pch(${name})
  endif()
  add_test(NAME ${name} COMMAND ${name} --log_level=message --report_level=short)
  # A hang fails in minutes and names the test, instead of eating CI's whole budget.
  set(kind unit)
  if(ARG_PROCESS)
    set(kind process)
  endif()
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "NIXFLEET_TEST_FIXTURES=${PROJECT_SOURCE_DIR}/tests/fixtures"
    LABELS "${kind};${ARG_LABELS}"
    TIMEOUT ${NIXFLEET_TEST_TIMEOUT})
endfunction()
