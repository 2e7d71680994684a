// framepipe/framepipe.hpp - the whole library in one include.
//
// framepipe is header-only and needs nothing but the C++20 standard library and threads.
// Each block also has its own header; include just the ones you use to keep builds lean.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/version.hpp>

#include <framepipe/batcher.hpp>
#include <framepipe/broadcaster.hpp>
#include <framepipe/channel.hpp>
#include <framepipe/exposition.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/pool.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sampling.hpp>
#include <framepipe/select.hpp>
#include <framepipe/sliding_window.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/stamped.hpp>
