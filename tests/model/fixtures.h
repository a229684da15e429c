// Access to the golden files in ../shared/fixtures for model tests.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

inline std::string fixture_path(const std::string& name) { return std::string(MAMBACPP_FIXTURES) + "/" + name; }

#define REQUIRE_FIXTURES()                                                   \
  do {                                                                       \
    if (!std::filesystem::exists(fixture_path("mamba1_golden.safetensors"))) \
      GTEST_SKIP() << "golden fixtures not found at " << MAMBACPP_FIXTURES;  \
  } while (0)
