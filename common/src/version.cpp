// NIXFLEET_VERSION comes from the CMake project version.
#include "nixfleet/common/version.hpp"

namespace nixfleet {

std::string_view version() noexcept { return NIXFLEET_VERSION; }

}  // namespace nixfleet
