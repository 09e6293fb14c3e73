# Third-party dependencies. Debian 12: libboost1.81-all-dev liburing-dev libssl-dev libsqlite3-dev
# libspdlog-dev libfmt-dev libcli11-dev (scripts/install-deps.sh installs them).
find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
find_package(OpenSSL 3 REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)

find_package(PkgConfig REQUIRED)
pkg_check_modules(URING IMPORTED_TARGET liburing)
