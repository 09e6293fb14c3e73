// Crash-safe file replacement: write a temporary file, fsync it, rename it over the target, fsync
// the directory. Writes go through Asio's file support (io_uring where available).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace nixfleet::durable {

// Completes once `content` is durably at `path` (the old content or the new, never a mix).
// Errors: whatever open/write/fsync/rename report; the target is untouched then.
boost::asio::awaitable<boost::system::error_code> replace_file(std::filesystem::path path, std::string content);

// Removes `path` and fsyncs its directory; a missing file is not an error.
boost::system::error_code remove_file(const std::filesystem::path& path);

// Reads a whole file of at most `max_bytes`; errc::no_such_file_or_directory when absent.
boost::system::result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes = 16 << 20);

}  // namespace nixfleet::durable
