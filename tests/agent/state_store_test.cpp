// Durable agent state: round trips, and torn, corrupted or foreign files detected and set aside.
#include "nixfleet/agent/io/state_store.hpp"
#include "run_sync.hpp"

#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sys/stat.h>

using namespace nixfleet;
using namespace nixfleet::agent;
namespace fs = std::filesystem;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
const std::string path_b = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";

struct fixture {
  fixture() : dir(fs::temp_directory_path() / ("nixfleet-state-" + std::to_string(::getpid()) + "-" + std::to_string(n++))), store(dir / "state") {
    BOOST_REQUIRE(!store.prepare());
  }
  ~fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  core::in_flight record() const {
    return core::in_flight{path_b, path_a, "r-1", std::string("ro-1"), 2, protocol::activation_mode::switch_,
                           core::in_flight::phase::rolling_back, "health gate failed", false,
                           core::high_water{9, protocol::parse_time("2026-11-25T18:00:00.000Z").value(), "r-1"}};
  }
  std::string slurp(const fs::path& p) const {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir;
  io::state_store store;
  static inline int n = 0;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(state_store_tests, fixture)

BOOST_AUTO_TEST_CASE(record_round_trips_and_clears) {
  BOOST_TEST(!store.load_record().value.has_value());
  BOOST_TEST(!store.load_record().problem.has_value());
  BOOST_TEST(!test::run_sync(store.save_record(record())));
  auto l = store.load_record();
  BOOST_REQUIRE(l.value.has_value());
  BOOST_TEST((*l.value == record()));
  BOOST_TEST(!store.clear_record());
  BOOST_TEST(!store.load_record().value.has_value());
  BOOST_TEST(!store.clear_record());  // clearing twice is fine
  // No temporary files are left behind.
  for (const auto& e : fs::directory_iterator(store.dir())) BOOST_TEST(e.path().filename().string().find(".tmp") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(state_files_are_private_whatever_the_umask) {
  const auto old = ::umask(022);
  BOOST_TEST(!test::run_sync(store.save_record(record())));
  BOOST_TEST(!test::run_sync(store.save_state(io::persistent_state{})));
  ::umask(old);
  struct stat st {};
  for (const char* name : {"in-flight.json", "state.json"}) {
    BOOST_REQUIRE(::stat((store.dir() / name).c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0600u, name);
  }
  BOOST_REQUIRE(::stat(store.dir().c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0700u);
}

BOOST_AUTO_TEST_CASE(state_round_trips_and_caps_the_quarantine) {
  io::persistent_state s;
  s.last_good = path_a;
  s.hold = true;
  for (std::uint32_t i = 0; i < 100; ++i) s.quarantine.push_back({path_b, i, "attempt " + std::to_string(i)});
  BOOST_TEST(!test::run_sync(store.save_state(s)));
  auto l = store.load_state();
  BOOST_TEST(!l.problem.has_value());
  BOOST_TEST(*l.value.last_good == path_a);
  BOOST_TEST(l.value.hold);
  BOOST_REQUIRE(l.value.quarantine.size() == 64u);
  BOOST_TEST(l.value.quarantine.back().attempt == 99u);  // the newest are kept
}

BOOST_AUTO_TEST_CASE(anti_downgrade_state_and_the_signed_revocation_list_survive_a_restart) {
  io::persistent_state s;
  s.accepted = core::high_water{12, protocol::parse_time("2026-11-25T18:00:00.000Z").value(), "r-12"};
  s.step_back = path_a;
  s.staged_boot = path_b;
  auto key = protocol::generate_secret_key("ops-1");
  protocol::revocation_list list{3, protocol::parse_time("2026-11-25T19:00:00.000Z").value(), {"r-2"}, {path_a}, {"ops-0"}, {}};
  protocol::sign_revocations(key, list);
  s.revocations = list;
  BOOST_TEST(!test::run_sync(store.save_state(s)));
  auto l = store.load_state();
  BOOST_TEST(!l.problem.has_value());
  BOOST_TEST((l.value.accepted == s.accepted));
  BOOST_TEST((l.value.step_back == s.step_back));
  BOOST_TEST((l.value.staged_boot == s.staged_boot));
  BOOST_TEST((l.value.revocations == s.revocations));
  // Still verifies after the round trip: kept exactly as signed.
  protocol::trusted_keys trust({protocol::to_public_key(key)});
  BOOST_TEST(!protocol::verify_revocations(trust, *l.value.revocations));
}

// The filesystem type /proc/mounts gives for the mount that holds `p` (longest mount point).
std::string mount_type(const fs::path& p) {
  std::ifstream mounts("/proc/mounts");
  std::string dev, point, type, rest, best_type;
  std::size_t best = 0;
  const auto path = fs::weakly_canonical(p).string() + "/";
  while (mounts >> dev >> point >> type && std::getline(mounts, rest)) {
    const auto prefix = point == "/" ? point : point + "/";
    if (path.starts_with(prefix) && prefix.size() > best) best = prefix.size(), best_type = type;
  }
  return best_type;
}

BOOST_AUTO_TEST_CASE(a_state_directory_on_tmpfs_is_known_to_be_volatile) {
  BOOST_TEST(store.volatile_storage() == (mount_type(store.dir()) == "tmpfs"), mount_type(store.dir()));
  if (mount_type("/dev/shm") == "tmpfs") {
    const auto shm = fs::path("/dev/shm") / ("nixfleet-state-" + std::to_string(::getpid()));
    io::state_store on_shm(shm);
    BOOST_REQUIRE(!on_shm.prepare());
    BOOST_TEST(on_shm.volatile_storage());
    fs::remove_all(shm);
  }
  const auto here = fs::current_path();
  BOOST_TEST(io::state_store(here).volatile_storage() == (mount_type(here) == "tmpfs"));
}

BOOST_AUTO_TEST_CASE(torn_file_is_detected_and_set_aside) {
  BOOST_TEST(!test::run_sync(store.save_record(record())));
  const auto file = store.dir() / "in-flight.json";
  const auto text = slurp(file);
  std::ofstream(file, std::ios::trunc) << text.substr(0, text.size() / 2);
  auto l = store.load_record();
  BOOST_TEST(!l.value.has_value());
  BOOST_REQUIRE(l.problem.has_value());
  BOOST_TEST(l.problem->find("torn or corrupted") != std::string::npos, *l.problem);
  BOOST_TEST(fs::exists(store.dir() / "in-flight.json.corrupt"));
  BOOST_TEST(!fs::exists(file));
}

BOOST_AUTO_TEST_CASE(flipped_byte_in_the_data_is_detected) {
  io::persistent_state s;
  s.last_good = path_a;
  BOOST_TEST(!test::run_sync(store.save_state(s)));
  const auto file = store.dir() / "state.json";
  auto text = slurp(file);
  const auto at = text.find("0c2a6q");
  BOOST_REQUIRE(at != std::string::npos);
  text[at] = '1';  // still a valid store path, but not what was written
  std::ofstream(file, std::ios::trunc) << text;
  auto l = store.load_state();
  BOOST_TEST(!l.value.last_good.has_value());
  BOOST_TEST(l.problem.has_value());
}

BOOST_AUTO_TEST_CASE(garbage_and_valid_seal_with_invalid_content_are_refused) {
  const auto file = store.dir() / "in-flight.json";
  std::ofstream(file) << "\x00\x01 not json";
  BOOST_TEST(store.load_record().problem.has_value());
  // Correctly sealed, but the target is not a store path: refused by validation, not trusted.
  boost::json::object bad{{"target", "/etc/passwd"}, {"previous", path_a}, {"attempt", 0}, {"mode", "switch"},
                          {"rolling_back", false}};
  std::ofstream(file, std::ios::trunc) << io::seal(bad);
  auto l = store.load_record();
  BOOST_TEST(!l.value.has_value());
  BOOST_REQUIRE(l.problem.has_value());
  BOOST_TEST(l.problem->find("target") != std::string::npos, *l.problem);
}

BOOST_AUTO_TEST_CASE(unwritable_directory_is_an_error_not_a_crash) {
  io::state_store nowhere("/proc/nixfleet-cannot-exist");
  auto ec = test::run_sync(nowhere.save_record(record()));
  BOOST_TEST(ec.failed());
}

BOOST_AUTO_TEST_SUITE_END()
