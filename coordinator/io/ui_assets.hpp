// The dashboard's static files (coordinator/ui/), built into the binary by cmake/embed_assets.cmake:
// no CDN, no files to install beside it, and what is served is what was reviewed.
#pragma once

#include <span>
#include <string_view>

namespace nixfleet::coordinator::io {

struct ui_asset {
  std::string_view name;          // the file's name, served at /ui/assets/NAME
  std::string_view content_type;
  std::string_view body;
  std::string_view etag;          // quoted, from the file's SHA-256
};

std::span<const ui_asset> ui_assets() noexcept;

}  // namespace nixfleet::coordinator::io
