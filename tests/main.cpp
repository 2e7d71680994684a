// Shared Catch2 v2 entry point; compiled once into framepipe_catch_main.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
