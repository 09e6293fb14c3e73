// The nixfleet version every binary reports (and agents send as agent_version).
#pragma once

#include <string_view>

namespace nixfleet {

std::string_view version() noexcept;

}  // namespace nixfleet
