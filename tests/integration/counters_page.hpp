// busd's counters page for integration tests, read as busctl reads it.
#pragma once

#include <catch2/catch.hpp>

#include "bus/counters.hpp"
#include "busd_fixture.hpp"

namespace bus::test {

// busd listens before it creates its counters page: wait for the page.
inline counters::CountersView open_page(const Busd& d) {
  auto v = counters::open_counters(d.counters_path());
  eventually([&] {
    v = counters::open_counters(d.counters_path());
    return v.has_value();
  });
  if (!v) FAIL("counters page: " << v.error().message());
  return std::move(*v);
}

}  // namespace bus::test
