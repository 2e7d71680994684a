// framepipe/transport/detail/envelope.hpp - the fixed header every transported message starts
// with, the same for every engine (iceoryx chunks, NATS messages).
//
// Standard library only. Included by the adapters (iceoryx.hpp, nats.hpp); not a public block.
//
// Layout (128 bytes, little-endian whatever the host, so that hosts of either order can talk;
// the payload that follows starts 64-byte aligned in a chunk that is):
//
//     offset size  field
//          0    4  magic "FPT1"
//          4    2  version (1)
//          6    2  header size (128): a later version may grow it; older readers skip the rest
//          8    4  kind: 1 frame, 2 result, 3 receipt
//         12    4  payload size in bytes (what follows the header)
//         16    8  seq: the item's own sequence number (a source's frame number)
//         24    8  epoch: the source's connection that produced the item (0: not live)
//         32    8  link_seq: this sender's message number on this subject, from 0, without
//                  gaps: a receiver that sees a gap knows the transport lost the messages
//         40    8  captured, steady clock (CLOCK_MONOTONIC), ns: valid on the sender's host
//         48    8  captured, system clock (realtime), ns since 1970: valid across hosts
//         56    8  sender id: random per sender object (a restarted sender is a new sender)
//         64    8  clock domain: a hash of the sender's boot id (same host: same domain)
//         72   48  sender name, UTF-8, NUL-padded (not terminated when 48 bytes long)
//        120    8  reserved (0)
#pragma once

#include <framepipe/detail/config.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>

namespace framepipe::transport {

// What a message carries.
enum class message_kind : std::uint32_t { frame = 1, result = 2, receipt = 3 };

// The decoded header of one message.
struct envelope {
    message_kind kind = message_kind::frame;
    std::uint32_t payload_size = 0;
    std::uint64_t seq = 0;
    std::uint64_t epoch = 0;
    std::uint64_t link_seq = 0;
    std::int64_t captured_steady_ns = 0;
    std::int64_t captured_system_ns = 0;
    std::uint64_t sender_id = 0;
    std::uint64_t clock_domain = 0;
    std::array<char, 48> sender{}; // NUL-padded

    [[nodiscard]] std::string_view sender_name() const noexcept {
        const auto end = std::find(sender.begin(), sender.end(), '\0');
        return {sender.data(), static_cast<std::size_t>(end - sender.begin())};
    }
};

inline constexpr std::size_t envelope_size = 128;
inline constexpr std::uint32_t envelope_magic = 0x31545046; // "FPT1" read as little-endian
inline constexpr std::uint16_t envelope_version = 1;

// Why a message could not be read. Every one is counted as malformed by a receiver.
enum class decode_error { too_short, bad_magic, bad_version, bad_header_size, bad_kind, bad_size };

[[nodiscard]] constexpr std::string_view to_string(decode_error e) noexcept {
    switch (e) {
    case decode_error::too_short: return "shorter than the header";
    case decode_error::bad_magic: return "not a framepipe message (bad magic)";
    case decode_error::bad_version: return "unknown version";
    case decode_error::bad_header_size: return "bad header size";
    case decode_error::bad_kind: return "unknown kind";
    case decode_error::bad_size: return "payload size disagrees with the message size";
    }
    return "unknown";
}

namespace detail {

// Little-endian stores and loads by bytes: the compiler turns them into plain moves on a
// little-endian host, and they never read unaligned words.
template <class U>
void put_le(std::byte* at, U v) noexcept {
    for (std::size_t i = 0; i < sizeof(U); ++i) {
        at[i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFFU);
    }
}

template <class U>
[[nodiscard]] U get_le(const std::byte* at) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) {
        v |= static_cast<std::uint64_t>(std::to_integer<unsigned>(at[i])) << (8 * i);
    }
    return static_cast<U>(v);
}

} // namespace detail

// Writes `e` into the first envelope_size bytes of `out` (which must be at least that long).
// Any thread; never throws.
inline void write_envelope(const envelope& e, std::span<std::byte> out) noexcept {
    std::byte* p = out.data();
    std::memset(p, 0, envelope_size);
    detail::put_le<std::uint32_t>(p + 0, envelope_magic);
    detail::put_le<std::uint16_t>(p + 4, envelope_version);
    detail::put_le<std::uint16_t>(p + 6, static_cast<std::uint16_t>(envelope_size));
    detail::put_le<std::uint32_t>(p + 8, static_cast<std::uint32_t>(e.kind));
    detail::put_le<std::uint32_t>(p + 12, e.payload_size);
    detail::put_le<std::uint64_t>(p + 16, e.seq);
    detail::put_le<std::uint64_t>(p + 24, e.epoch);
    detail::put_le<std::uint64_t>(p + 32, e.link_seq);
    detail::put_le<std::uint64_t>(p + 40, static_cast<std::uint64_t>(e.captured_steady_ns));
    detail::put_le<std::uint64_t>(p + 48, static_cast<std::uint64_t>(e.captured_system_ns));
    detail::put_le<std::uint64_t>(p + 56, e.sender_id);
    detail::put_le<std::uint64_t>(p + 64, e.clock_domain);
    std::memcpy(p + 72, e.sender.data(), e.sender.size());
}

// What read_envelope found: the header, and where the payload is; or why the message is bad.
struct decoded {
    std::optional<envelope> header;
    std::span<const std::byte> payload;
    decode_error error = decode_error::too_short; // meaningful when !header
};

// Reads a whole message (header and payload). Never throws and never reads past `in`: a message
// from another program, truncated or forged, gives an error, never a crash. Any thread.
[[nodiscard]] inline decoded read_envelope(std::span<const std::byte> in) noexcept {
    decoded d;
    if (in.size() < 8) {
        d.error = decode_error::too_short;
        return d;
    }
    const std::byte* p = in.data();
    if (detail::get_le<std::uint32_t>(p) != envelope_magic) {
        d.error = decode_error::bad_magic;
        return d;
    }
    if (detail::get_le<std::uint16_t>(p + 4) != envelope_version) {
        d.error = decode_error::bad_version;
        return d;
    }
    const std::size_t header = detail::get_le<std::uint16_t>(p + 6);
    if (header < envelope_size) {
        d.error = decode_error::bad_header_size;
        return d;
    }
    if (in.size() < header) {
        d.error = decode_error::too_short;
        return d;
    }
    envelope e;
    const auto kind = detail::get_le<std::uint32_t>(p + 8);
    if (kind < 1 || kind > 3) {
        d.error = decode_error::bad_kind;
        return d;
    }
    e.kind = static_cast<message_kind>(kind);
    e.payload_size = detail::get_le<std::uint32_t>(p + 12);
    if (e.payload_size != in.size() - header) {
        d.error = decode_error::bad_size;
        return d;
    }
    e.seq = detail::get_le<std::uint64_t>(p + 16);
    e.epoch = detail::get_le<std::uint64_t>(p + 24);
    e.link_seq = detail::get_le<std::uint64_t>(p + 32);
    e.captured_steady_ns = static_cast<std::int64_t>(detail::get_le<std::uint64_t>(p + 40));
    e.captured_system_ns = static_cast<std::int64_t>(detail::get_le<std::uint64_t>(p + 48));
    e.sender_id = detail::get_le<std::uint64_t>(p + 56);
    e.clock_domain = detail::get_le<std::uint64_t>(p + 64);
    std::memcpy(e.sender.data(), p + 72, e.sender.size());
    d.header = e;
    d.payload = in.subspan(header);
    return d;
}

// This host's clock domain: a hash of the kernel's boot id, so that two processes on one host
// (one boot) agree and can compare steady-clock times directly; 0 where there is no boot id
// (captured times then always go through the system clock). Computed once.
[[nodiscard]] inline std::uint64_t local_clock_domain() {
    static const std::uint64_t domain = [] {
        std::ifstream in("/proc/sys/kernel/random/boot_id");
        std::string id;
        if (!(in >> id) || id.empty()) {
            return std::uint64_t{0};
        }
        // FNV-1a: stable across processes and builds (std::hash need not be).
        std::uint64_t h = 1469598103934665603ULL;
        for (const char c : id) {
            h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
        }
        return h == 0 ? 1 : h;
    }();
    return domain;
}

// A random sender id, never 0.
[[nodiscard]] inline std::uint64_t new_sender_id() {
    std::random_device rd;
    const std::uint64_t id =
        (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    return id == 0 ? 1 : id;
}

// How far a received capture time may lie from now, either way, before it is taken for forged
// or corrupt (local_capture_time): a day, far beyond any frame's age or two hosts' clock skew.
inline constexpr std::chrono::hours plausible_capture_offset{24};

// The capture time of a received message on this host's steady clock: the sender's steady time
// when it shares our clock domain (exact), else its system time moved onto our steady clock
// (as good as the two hosts' clock synchronisation, NTP or PTP). A capture time more than
// plausible_capture_offset (a day) before or after now, on the clock it is read from, is not
// believed (forged or corrupt bytes): `arrived` is returned instead. Any bytes in `e` are safe:
// no arithmetic on them can overflow. Any thread.
[[nodiscard]] inline std::chrono::steady_clock::time_point local_capture_time(
    const envelope& e,
    std::chrono::steady_clock::time_point arrived = std::chrono::steady_clock::now()) {
    using namespace std::chrono;
    constexpr std::int64_t limit = duration_cast<nanoseconds>(plausible_capture_offset).count();
    // Now on the clock the capture time is read from, and the capture time on it, in ns: their
    // distance, taken in unsigned arithmetic (exact for any two int64 values), is at most a day,
    // so that the difference below cannot overflow. (now +- a day could, for an `arrived` near
    // the clock's ends.)
    const auto plausible = [](std::int64_t now, std::int64_t captured) {
        const auto n = static_cast<std::uint64_t>(now);
        const auto c = static_cast<std::uint64_t>(captured);
        return (captured >= now ? c - n : n - c) <= static_cast<std::uint64_t>(limit);
    };
    if (e.clock_domain != 0 && e.clock_domain == local_clock_domain()) {
        const auto now = duration_cast<nanoseconds>(arrived.time_since_epoch()).count();
        if (!plausible(now, e.captured_steady_ns)) {
            return arrived;
        }
        return steady_clock::time_point(
            duration_cast<steady_clock::duration>(nanoseconds(e.captured_steady_ns)));
    }
    const auto sys_now = duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
    if (!plausible(sys_now, e.captured_system_ns)) {
        return arrived;
    }
    // arrived - back, saturating at the clock's ends (back is within a day either way).
    const auto back =
        duration_cast<steady_clock::duration>(nanoseconds(sys_now - e.captured_system_ns));
    const auto at = arrived.time_since_epoch();
    using d = steady_clock::duration;
    if (back > d::zero() && at < d::min() + back) {
        return steady_clock::time_point::min();
    }
    if (back < d::zero() && at > d::max() + back) {
        return steady_clock::time_point::max();
    }
    return arrived - back;
}

// Fills the capture times and clock domain of `e` from a steady-clock capture time.
// A capture time more than plausible_capture_offset from now (time_point::min() or max(), say)
// gets no system time: its receivers take the arrival time (see local_capture_time), and nothing
// here overflows.
inline void set_capture_time(envelope& e, std::chrono::steady_clock::time_point captured) {
    using namespace std::chrono;
    constexpr std::int64_t limit = duration_cast<nanoseconds>(plausible_capture_offset).count();
    const auto steady_now =
        duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
    const auto system_now =
        duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
    const auto at = duration_cast<nanoseconds>(captured.time_since_epoch()).count();
    e.captured_steady_ns = at;
    e.captured_system_ns = at >= steady_now - limit && at <= steady_now + limit
                               ? system_now - (steady_now - at)
                               : std::numeric_limits<std::int64_t>::min();
    e.clock_domain = local_clock_domain();
}

// Fills the sender fields of `e`.
inline void set_sender(envelope& e, std::uint64_t id, std::string_view name) noexcept {
    e.sender_id = id;
    e.sender.fill('\0');
    std::memcpy(e.sender.data(), name.data(), std::min(name.size(), e.sender.size()));
}

} // namespace framepipe::transport
