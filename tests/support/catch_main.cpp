// Compiled once into a static library that every Catch2 test links.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
