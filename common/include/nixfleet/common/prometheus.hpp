// The Prometheus text exposition format (version 0.0.4), written one family at a time: a HELP and
// a TYPE line, then its samples, label values escaped.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace nixfleet::prometheus {

using labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

class text {
 public:
  // Starts a family: `type` is counter, gauge or histogram.
  void family(std::string_view name, std::string_view type, std::string_view help);

  template <class V>
    requires std::integral<V> || std::floating_point<V>
  void sample(std::string_view name, labels ls, V value) {
    if constexpr (std::is_same_v<V, bool>) put(name, ls, static_cast<std::uint64_t>(value));
    else if constexpr (std::floating_point<V>) put(name, ls, static_cast<double>(value));
    else if constexpr (std::signed_integral<V>) put(name, ls, static_cast<std::int64_t>(value));
    else put(name, ls, static_cast<std::uint64_t>(value));
  }
  template <class V>
  void sample(std::string_view name, V value) {
    sample(name, {}, value);
  }
  // A family of one unlabelled sample.
  template <class V>
  void scalar(std::string_view name, std::string_view type, std::string_view help, V value) {
    family(name, type, help);
    sample(name, {}, value);
  }

  const std::string& str() const noexcept { return out_; }
  std::string take() noexcept { return std::move(out_); }

 private:
  void head(std::string_view name, labels ls);
  void put(std::string_view name, labels ls, std::uint64_t v);
  void put(std::string_view name, labels ls, std::int64_t v);
  void put(std::string_view name, labels ls, double v);

  std::string out_;
};

}  // namespace nixfleet::prometheus
